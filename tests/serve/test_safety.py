"""The safety layer: scaling, per-dimension clipping and workspace bounds.

Expected values are computed here step by step (a loop over positions), not with the layer's vectorized code.
Run: .venv/bin/pytest tests/serve/test_safety.py -q
"""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.serve.safety import SafetyConfig, SafetyLayer

MASK = np.array([True] * 6 + [False])  # the gripper (last dim) is not normalized
RNG = np.random.default_rng(0)


def layer(**kwargs) -> SafetyLayer:
    return SafetyLayer(SafetyConfig(**kwargs), {"synthetic": MASK})


def test_off_by_default_and_returns_a_copy():
    action = RNG.normal(size=7)
    out = layer().apply(action, "synthetic")
    np.testing.assert_array_equal(out, action)
    out[0] = 99.0
    assert action[0] != 99.0
    assert not SafetyConfig().active


def test_scale_leaves_the_gripper_alone_by_default():
    action = RNG.normal(size=7)
    out = layer(scale=0.25).apply(action, "synthetic")
    for d in range(6):
        assert out[d] == pytest.approx(action[d] * 0.25)
    assert out[6] == action[6]
    out = layer(scale=0.5, scale_dims=[0, 6]).apply(action, "synthetic")
    assert out[0] == pytest.approx(action[0] * 0.5) and out[6] == pytest.approx(action[6] * 0.5)
    assert out[1] == action[1]


def test_clip_per_dimension_after_scaling():
    low, high = [-0.1] * 6 + [0.0], [0.1] * 6 + [1.0]
    action = np.array([0.3, -0.3, 0.05, 0.15, -0.15, 0.0, 1.7])
    out = layer(scale=0.5, action_low=low, action_high=high).apply(action, "synthetic")
    expected = [min(max(a * (0.5 if d < 6 else 1.0), low[d]), high[d]) for d, a in enumerate(action)]
    np.testing.assert_allclose(out, expected)


def _walk(start, deltas, low, high):
    """Reference: clamp each intended position into the box, one step at a time."""
    position, intended, out = np.array(start, float), np.array(start, float), []
    for delta in deltas:
        intended = intended + delta
        target = np.array([min(max(x, lo), hi) for x, lo, hi in zip(intended, low, high)])
        out.append(target - position)
        position = target
    return np.array(out)


def test_workspace_bounds_single_action_and_chunk():
    low, high = [-0.5, -0.5, 0.0], [0.5, 0.5, 0.8]
    safety = layer(workspace_low=low, workspace_high=high)
    state = np.array([0.45, -0.2, 0.05, 9.0])
    action = np.array([0.2, -0.1, -0.3, 0.01, 0.02, 0.03, 1.0])
    out = safety.apply(action, "synthetic", state)
    np.testing.assert_allclose(out[:3], _walk(state[:3], [action[:3]], low, high)[0])
    np.testing.assert_array_equal(out[3:], action[3:])
    final = state[:3] + out[:3]
    assert np.all(final >= np.array(low) - 1e-12) and np.all(final <= np.array(high) + 1e-12)
    chunk = RNG.normal(scale=0.3, size=(5, 7))
    out = safety.apply(chunk, "synthetic", state)
    np.testing.assert_allclose(out[:, :3], _walk(state[:3], chunk[:, :3], low, high))
    np.testing.assert_array_equal(out[:, 3:], chunk[:, 3:])


def test_workspace_needs_state():
    safety = layer(workspace_low=[0, 0, 0], workspace_high=[1, 1, 1])
    for state in (None, np.zeros(2)):
        with pytest.raises(ValueError, match="must send 'state' with at least 3 entries"):
            safety.check_state(state)
        with pytest.raises(ValueError, match="state"):
            safety.apply(np.zeros(7), "synthetic", state)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"scale": 0.0}, "positive"),
        ({"scale": float("nan")}, "positive"),
        ({"action_low": [0.0] * 7}, "set both"),
        ({"action_low": [0.0], "action_high": [0.0, 1.0]}, "same"),
        ({"action_low": [1.0], "action_high": [0.0]}, "swap"),
        ({"workspace_low": [0, 0, float("inf")], "workspace_high": [1, 1, 1]}, "finite"),
    ],
)
def test_config_validation(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        SafetyConfig(**kwargs)


def test_limits_must_fit_the_action_dimension():
    with pytest.raises(ValueError, match="one bound per dimension"):
        layer(action_low=[0.0] * 6, action_high=[1.0] * 6)
    with pytest.raises(ValueError, match="scale_dims"):
        layer(scale=0.5, scale_dims=[7])
    with pytest.raises(ValueError, match="workspace bounds cover 8 dims"):
        layer(workspace_low=[0.0] * 8, workspace_high=[1.0] * 8)
