"""The study end to end at a toy budget: record, train, adapt, quantize, evaluate, report, resume.

Slow (about a minute): it runs the real simulator, trainer and evaluation harness.
"""

from __future__ import annotations

import json

import pytest

from vlaforge.study.config import StudyConfig
from vlaforge.study.run import run_study

pytestmark = pytest.mark.slow


def test_study_runs_every_stage_and_resumes(tmp_path):
    cfg = StudyConfig(
        out=tmp_path, comparisons=("precision", "lora"), seeds=(0,), demo_episodes=2, pretrain_episodes=1,
        pretrain_tasks=("reach-v3",), adapt_episodes=1, train_steps=2, pretrain_steps=2, adapt_steps=2,
        batch_size=2, eval_episodes=1, max_steps=8,
    )  # fmt: skip
    report = run_study(cfg)
    arms = report["arms"]
    assert set(arms) == {"base", "base-int8", "base-nf4", "pretrain", "adapt-full", "adapt-lora"}
    assert [arms[a]["episodes"] for a in ("base", "base-int8", "adapt-lora")] == [3, 3, 5]  # tasks x 1 episode
    assert "episodes" not in arms["pretrain"]  # trained, not evaluated
    assert arms["adapt-lora"]["trainable_params"] < arms["adapt-full"]["trainable_params"]
    assert arms["base-int8"]["trainable_params"] == 0  # evaluation-only: reuses base's checkpoint
    results = {r["arm"]: r for r in report["results"]}
    assert results["base-int8"]["checkpoint"] == results["base"]["checkpoint"]
    adapted = json.loads((tmp_path / "seed-0" / "adapt-lora" / "run" / "train_config.json").read_text())
    assert adapted["model"] == results["pretrain"]["checkpoint"] and adapted["mode"] == "lora"
    assert (tmp_path / "report.md").is_file() and (tmp_path / "training_curves.png").is_file()

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed-0/*/result.json")}
    again = run_study(cfg)  # resumes: nothing is trained or evaluated again
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("seed-0/*/result.json")} == stamps
    assert again["arms"] == report["arms"]
