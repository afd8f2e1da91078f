import warnings

import numpy as np
import pytest

from vlaforge.actions.normalize import (
    ActionStats,
    NormalizationError,
    action_stats_for,
    normalize_actions,
    select_unnorm_key,
    unnormalize_actions,
)

Q01 = [-0.1, -0.2, -0.3, -1.0, 0.0, -0.5, 0.0]
Q99 = [0.1, 0.4, 0.3, 1.0, 2.0, 0.5, 1.0]
MASK = [True] * 6 + [False]


def stats(**overrides) -> ActionStats:
    raw = {"q01": Q01, "q99": Q99, "mask": MASK, **overrides}
    return ActionStats.from_dict(raw, dataset="bridge_orig", feature="action")


def test_normalize_maps_q01_q99_to_minus_one_one_and_leaves_the_gripper_raw():
    s = stats()
    x = np.array([Q01, Q99])
    x[:, 6] = [0.0, 1.0]
    out = normalize_actions(x, s)
    np.testing.assert_allclose(out[0, :6], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[1, :6], 1.0, atol=1e-6)
    np.testing.assert_array_equal(out[:, 6], [0.0, 1.0])
    # the midpoint goes to 0; values beyond the bounds are clipped
    mid = (np.array(Q01) + np.array(Q99)) / 2
    np.testing.assert_allclose(normalize_actions(mid, s)[:6], 0.0, atol=1e-6)
    far = normalize_actions(np.array(Q99) * 10 + 5, s)
    assert np.all(far[:6] == 1.0)


def test_normalize_and_unnormalize_invert_each_other_on_masked_dims():
    s = stats()
    rng = np.random.default_rng(0)
    x = rng.uniform(Q01, Q99, size=(500, 7))  # inside the bounds: no clipping
    back = unnormalize_actions(normalize_actions(x, s), s)
    np.testing.assert_allclose(back[:, :6], x[:, :6], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(back[:, 6], x[:, 6])  # unmasked: passed through both ways
    a = rng.uniform(-1, 1, size=(500, 7))
    np.testing.assert_allclose(normalize_actions(unnormalize_actions(a, s), s)[:, :6], a[:, :6], atol=1e-7)


def test_constant_dims_become_zero_and_degenerate_bounds_warn():
    s = stats(min=[-1, -1, 0.25, -1, -1, -1, 0], max=[1, 1, 0.25, 1, 1, 1, 1])
    out = normalize_actions(np.tile([0.0, 0.0, 0.25, 0.0, 1.0, 0.0, 1.0], (3, 1)), s)
    np.testing.assert_array_equal(out[:, 2], 0.0)  # min == max: zeroed as the original
    q = list(Q99)
    q[1] = Q01[1]
    with pytest.warns(UserWarning, match=r"bridge_orig.*q99 == q01 in dims \[1\]"):
        normalize_actions(np.zeros(7), stats(q99=q))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalize_actions(np.zeros(7), s)  # no warning for healthy statistics


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: normalize_actions(np.zeros((2, 6)), s), "'bridge_orig'.*'action'.*6 dimensions.*statistics have 7"),
        (lambda s: unnormalize_actions(np.zeros(8), s), "'bridge_orig'.*8 dimensions"),
        (lambda s: normalize_actions(np.array([[0, 0, np.nan, 0, 0, 0, 1]]), s), "'bridge_orig'.*'action'.*NaN"),
        (lambda s: normalize_actions(np.array([0, 0, 0, np.inf, 0, 0, 1]), s), "NaN or inf"),
    ],
)
def test_bad_data_raises_naming_dataset_and_feature(call, message):
    with pytest.raises(NormalizationError, match=message):
        call(stats())


def test_bad_statistics_raise_naming_dataset_and_feature():
    with pytest.raises(NormalizationError, match="'fractal'.*'proprio'.*no 'q99'"):
        ActionStats.from_dict({"q01": [0.0]}, dataset="fractal", feature="proprio")
    with pytest.raises(NormalizationError, match="q99 < q01"):
        ActionStats.from_dict({"q01": [1.0], "q99": [0.0]}, dataset="fractal")
    with pytest.raises(NormalizationError, match="mask has shape"):
        ActionStats.from_dict({"q01": [0.0, 0.0], "q99": [1.0, 1.0], "mask": [True]}, dataset="fractal")


def test_unnorm_key_selection_never_falls_back_silently():
    norm = {"bridge_orig": {"action": {"q01": Q01, "q99": Q99, "mask": MASK}}, "fractal": {"action": {}}}
    assert select_unnorm_key({"only": {}}, None) == "only"
    with pytest.raises(NormalizationError, match="pass unnorm_key=.*bridge_orig, fractal"):
        select_unnorm_key(norm, None)
    with pytest.raises(NormalizationError, match="unknown unnorm_key 'bridge'"):
        select_unnorm_key(norm, "bridge")
    with pytest.raises(NormalizationError, match="no normalization statistics"):
        select_unnorm_key({}, None)
    assert action_stats_for(norm, "bridge_orig").dataset == "bridge_orig"
    with pytest.raises(NormalizationError, match="'fractal'.*no 'q01'"):
        action_stats_for(norm, "fractal")
