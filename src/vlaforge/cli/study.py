"""Reproduce the paper's comparisons in miniature: train and evaluate every arm, print the tables.

vlaforge study --quick                              # every comparison, small budgets: about 18 minutes
vlaforge study                                      # the full study: 3 seeds, hours (it says how many)
vlaforge study --comparisons fusion decoding        # only some comparisons (their arms only)
vlaforge study --seeds 0 --out outputs/study-1seed  # one seed

Interrupted? Run the same command again: finished arms are kept, a partial training run resumes.
"""

from __future__ import annotations

import tyro


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge study`."""
    from vlaforge.study.config import StudyConfig
    from vlaforge.study.run import run_study

    config = tyro.cli(StudyConfig, args=argv, prog="vlaforge study", description=__doc__)
    run_study(config)
    return 0
