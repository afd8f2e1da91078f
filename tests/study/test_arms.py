"""The study's design: every comparison's arms exist, dependencies come first, bad names fail clearly."""

from __future__ import annotations

import pytest

from vlaforge.config import get_preset
from vlaforge.infer.quantize import QUANT_MODES
from vlaforge.sim.suites import get_suite
from vlaforge.study.arms import ARMS, COMPARISONS, PRETRAINED, arms_needed
from vlaforge.train.config import MODES


def test_every_arm_is_buildable():
    for arm in ARMS.values():
        assert arm.mode in MODES and arm.quant in QUANT_MODES
        if arm.suite:
            get_suite(arm.suite)
        if arm.trains and arm.model != PRETRAINED:
            get_preset(arm.model)  # raises for an unknown preset
        if arm.checkpoint_of:
            assert ARMS[arm.checkpoint_of].trains


def test_comparison_arms_differ_in_one_thing():
    fusion = [ARMS[name] for name in COMPARISONS["fusion"].arms]
    assert [get_preset(a.model).use_fused_vision_backbone for a in fusion] == [True, False]
    vision = [ARMS[name] for name in COMPARISONS["vision"].arms]
    assert [a.mode for a in vision] == ["full", "frozen-vision"] and vision[0].data == vision[1].data
    heads = [get_preset(ARMS[name].model) for name in COMPARISONS["decoding"].arms]
    assert [(c.action_head, c.action_chunk) for c in heads] == [("tokens", 1), ("parallel-tokens", 4), ("l1", 4)]
    assert [ARMS[n].quant for n in COMPARISONS["precision"].arms] == ["fp32", "int8", "nf4"]


def test_arms_needed_adds_dependencies_before_their_users():
    names = [arm.name for arm in arms_needed(("lora",))]
    assert names == ["pretrain", "adapt-full", "adapt-lora"]
    names = [arm.name for arm in arms_needed(("precision",))]
    assert names == ["base", "base-int8", "base-nf4"]
    everything = [arm.name for arm in arms_needed(tuple(COMPARISONS))]
    assert everything.index("pretrain") < everything.index("pretrain-zero-shot") < everything.index("adapt-full")
    assert set(everything) == set(ARMS)


def test_unknown_comparison_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: fusion, vision"):
        arms_needed(("fusoin",))
