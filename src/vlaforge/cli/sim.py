"""Simulation tools: record scripted demonstrations, list the task suites.

    vlaforge sim demos --suite demo --episodes-per-task 30 --out data/mw-demo     # LeRobotDataset v3
    vlaforge sim demos --suite mt10 --episodes-per-task 10 --image-size 224 --out data/mt10
    vlaforge sim suites                                                            # suites and their tasks

`sim demos` runs Meta-World's scripted experts with fixed seeds (episode i of task t: seed derived from
--seed, t and i), keeps the successful episodes, reports how many were dropped, and validates the dataset
at the end. Interrupted? Run the same command again: it resumes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Annotated

import tyro

from vlaforge.cli.subcommands import dispatch
from vlaforge.sim.demos import DemoConfig


@dataclass
class DemosArgs:
    """Record scripted expert demonstrations as a LeRobotDataset v3 (video, state, action, instruction)."""

    demos: Annotated[DemoConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=DemoConfig)
    verbose: bool = False  # log each dropped episode's reason


@dataclass
class SuitesArgs:
    """List the task suites and their tasks."""

    json: bool = False  # print one JSON object instead of text


def demos_main(argv: list[str]) -> int:
    """`vlaforge sim demos`."""
    from vlaforge.sim.demos import generate_demos

    args = tyro.cli(DemosArgs, args=argv, prog="vlaforge sim demos", description=__doc__)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    summary = generate_demos(args.demos)
    print(f"kept {summary.kept} successful episodes, dropped {summary.dropped} failed ones"
          + (f", skipped {summary.skipped} already recorded" if summary.skipped else "")
          + f"; the dataset holds {summary.total} episodes: {args.demos.out}")  # fmt: skip
    for dropped in summary.dropped_episodes:
        print(f"  dropped {dropped['task']} episode {dropped['episode']} (seed {dropped['seed']}): {dropped['reason']}")
    if summary.interrupted:
        print("interrupted: run the same command again to resume")
        return 130
    return 0


def suites_main(argv: list[str]) -> int:
    """`vlaforge sim suites`."""
    from vlaforge.sim.suites import SUITES

    args = tyro.cli(SuitesArgs, args=argv, prog="vlaforge sim suites")
    if args.json:
        print(json.dumps({name: asdict(suite) for name, suite in SUITES.items()}, indent=2))
        return 0
    for suite in SUITES.values():
        count = f"{len(suite.tasks)} task" + ("s" if len(suite.tasks) != 1 else "")
        print(f"{suite.name:<15} {suite.family:<10} {count:>9}  {suite.description}")
        if len(suite.tasks) <= 10:
            print(f"{'':<15} {', '.join(suite.tasks)}")
    return 0


SUBCOMMANDS = {"demos": demos_main, "suites": suites_main}


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge sim`: dispatches to `demos` or `suites`."""
    return dispatch("vlaforge sim", __doc__, SUBCOMMANDS, argv, "subcommand")
