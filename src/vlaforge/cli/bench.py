"""Benchmarks: `vlaforge bench {sim,data,infer,train,serve}` print measured figures as a table.

Every speed or memory figure vlaforge quotes comes from one of these commands (never from a timed test).
Each benchmark lives in `vlaforge.bench.<name>` and exposes `main(argv) -> int`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from vlaforge.cli.subcommands import dispatch

BENCHMARKS: dict[str, str] = {
    "sim": "vlaforge.bench.sim",
    "data": "vlaforge.bench.data",
    "infer": "vlaforge.bench.infer",
    "train": "vlaforge.bench.train",
    "serve": "vlaforge.bench.serve",
}


def main(argv: list[str]) -> int:
    """Dispatches to `vlaforge.bench.<name>.main`."""
    entry_points = {name: _runner(module) for name, module in BENCHMARKS.items()}
    return dispatch("vlaforge bench", __doc__, entry_points, argv, "benchmark")


def _runner(module: str) -> Callable[[list[str]], int]:
    """The `main` of a benchmark module, imported only when it runs."""
    return lambda args: importlib.import_module(module).main(args)
