"""Benchmarks: `vlaforge bench {sim,data,infer,train,serve}` print measured figures as a table.

Every speed or memory figure vlaforge quotes comes from one of these commands (never from a timed test).
Each benchmark lives in `vlaforge.bench.<name>` and exposes `main(argv) -> int`.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS: dict[str, str] = {
    "sim": "vlaforge.bench.sim",
    "data": "vlaforge.bench.data",
    "infer": "vlaforge.bench.infer",
    "train": "vlaforge.bench.train",
    "serve": "vlaforge.bench.serve",
}


def main(argv: list[str]) -> int:
    """Dispatches to `vlaforge.bench.<name>.main`."""
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks: " + ", ".join(BENCHMARKS))
        return 0
    name = argv[0]
    if name not in BENCHMARKS:
        print(f"vlaforge bench: unknown benchmark '{name}'; choose one of: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    return int(importlib.import_module(BENCHMARKS[name]).main(argv[1:]) or 0)
