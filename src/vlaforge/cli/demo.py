"""The main job: record Meta-World demos, train a small VLA from scratch on the CPU, evaluate it, report.

vlaforge demo                      # the full demo (about 20 minutes on 2 cores), outputs/demo/report.md
vlaforge demo --quick              # a few-minute smoke run of the same pipeline
vlaforge demo --train-steps 4000   # any DemoJob field can be changed
"""

from __future__ import annotations

import tyro


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge demo`."""
    from vlaforge.demo import DemoJob, run_demo

    job = tyro.cli(DemoJob, args=argv, prog="vlaforge demo", description=__doc__)
    run_demo(job)
    return 0
