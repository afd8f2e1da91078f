"""StudyConfig: validation with guidance, and the quick budget."""

from __future__ import annotations

import pytest

from vlaforge.study.config import QUICK_BUDGET, StudyConfig


def test_quick_replaces_the_budgets_and_keeps_the_rest(tmp_path):
    cfg = StudyConfig(out=tmp_path, quick=True, comparisons=("fusion",)).resolved()
    assert cfg.train_steps == QUICK_BUDGET["train_steps"] and cfg.seeds == (0,)
    assert cfg.comparisons == ("fusion",) and cfg.out == tmp_path
    full = StudyConfig(out=tmp_path)
    assert full.resolved() is full and full.seeds == (0, 1, 2)


def test_steps_for_each_budget():
    cfg = StudyConfig(train_steps=10, pretrain_steps=20, adapt_steps=30)
    assert [cfg.steps_for(b) for b in ("main", "pretrain", "adapt")] == [10, 20, 30]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"comparisons": ("lora", "nope")}, "unknown comparison"),
        ({"seeds": ()}, "at least one comparison and one seed"),
        ({"train_steps": 0}, "train_steps must be >= 1"),
        ({"pretrain_tasks": ("bin-picking-v3",)}, "not ML45 train tasks"),
    ],
)
def test_bad_settings_fail_with_guidance(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(**kwargs)
