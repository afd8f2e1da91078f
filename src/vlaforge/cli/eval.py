"""Evaluate a policy in simulation: per-task success rates with 95% intervals, plots and videos.

    vlaforge eval --policy expert --suite mt10 --episodes-per-task 10          # validates the harness
    vlaforge eval --policy runs/demo/checkpoint --suite demo --seed 7 --out eval/demo
    vlaforge eval --policy ws://gpu-box:8000 --suite demo                       # a `vlaforge serve` server
    vlaforge eval --policy random --suite mt10 --tasks reach-v3 push-v3 --episodes-per-task 3

Writes results.json, results.csv, success.png, episodes.jsonl and videos/ (one success and one failure per
task) to --out (default: eval-results/<suite>_<policy>_seed<seed>). Ctrl-C stops early and still writes a
report of the finished episodes, marked "complete": false.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from vlaforge.sim.evaluate import EvalConfig


@dataclass
class Args:
    """Evaluate a policy on a simulated task suite."""

    policy: str  # "expert", "random", a checkpoint directory, or a server (http://host:port, ws://host:port)
    eval: Annotated[EvalConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=EvalConfig)
    verbose: bool = False  # log every episode's failure reason and the workers' messages


def default_out(policy: str, config: EvalConfig) -> Path:
    """eval-results/<suite>_<policy label>_seed<seed>, with the label made file-name safe."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(policy.rstrip("/")).name or policy).strip("-") or "policy"
    return Path("eval-results") / f"{config.suite}_{label}_seed{config.seed}"


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge eval`."""
    from vlaforge.sim.evaluate import run_eval
    from vlaforge.sim.report import failure_summary, format_table

    args = tyro.cli(Args, args=argv, prog="vlaforge eval", description=__doc__)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    config = args.eval
    if config.out is None:
        config.out = default_out(args.policy, config)
    report = run_eval(args.policy, config)
    print(format_table(report))
    problems = failure_summary(report)
    if problems:
        print("\nepisodes that failed for another reason than the step limit:\n  " + "\n  ".join(problems))
    print(f"\nmean task success rate: {report['overall']['mean_task_success_rate']:.1%}   "
          f"({report['duration_s']:.0f} s)\nreport: {config.out / 'results.json'}")  # fmt: skip
    if report["interrupted"]:
        print('interrupted: the report covers the finished episodes only ("complete": false)')
        return 130
    return 0
