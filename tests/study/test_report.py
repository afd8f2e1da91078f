"""The study report: seeds pooled with a Wilson interval, one table per comparison, plots written."""

from __future__ import annotations

import pytest

from vlaforge.sim.report import wilson_interval
from vlaforge.study.arms import arms_needed
from vlaforge.study.config import StudyConfig
from vlaforge.study.report import aggregate, comparison_table, write_report


def _result(arm, seed, successes, episodes=10, ms=5.0):
    return {"arm": arm, "seed": seed, "train_seconds": 60.0 * (seed + 1), "trainable_params": 100,
            "total_params": 400, "successes": successes, "episodes": episodes, "policy_ms_per_step": ms,
            "tasks": {"t": [successes, episodes]}}  # fmt: skip


def test_aggregate_pools_seeds():
    rows = aggregate([_result("base", 0, 7), _result("base", 1, 9), _result("siglip-only", 0, 2)])
    base = rows["base"]
    assert (base["successes"], base["episodes"]) == (16, 20)
    assert base["success_rate"] == pytest.approx(0.8)
    assert base["ci95"] == pytest.approx(list(wilson_interval(16, 20)))
    assert base["per_seed"] == [0.7, 0.9] and base["train_seconds"] == pytest.approx(90.0)
    assert rows["siglip-only"]["episodes"] == 10


def test_table_rows_and_missing_arms():
    rows = aggregate([_result("base", 0, 7), _result("base-int8", 0, 6)])
    text = "\n".join(comparison_table("precision", rows))
    assert "OpenVLA: 4-bit inference matches bf16" in text
    assert "| base | " in text and "**70%** (7/10)" in text and "**60%** (6/10)" in text
    assert "| base-nf4 | base's checkpoint, 4-bit NF4 LLM layers | not run |" in text
    assert "0.00M (25%)" in text  # trainable share of the parameters


def test_write_report_files(tmp_path):
    cfg = StudyConfig(out=tmp_path, comparisons=("precision",), seeds=(0,))
    results = [_result("base", 0, 7), _result("base-int8", 0, 6), _result("base-nf4", 0, 5)]
    report = write_report(cfg, arms_needed(cfg.comparisons), results, wall_seconds=120.0)
    assert report["arms"]["base-nf4"]["successes"] == 5
    text = (tmp_path / "report.md").read_text()
    assert "Wall time of this invocation: 2.0 min" in text and "### Inference precision" in text
    assert (tmp_path / "success.png").stat().st_size > 1000 and (tmp_path / "report.json").is_file()
