"""OXE standardization in numpy, checked against hand-computed expectations."""

import numpy as np
import pytest

from vlaforge.data.episode import DataError
from vlaforge.data.oxe import (
    OXEConfig,
    binarize_gripper_actions,
    bridge_orig_transform,
    invert_gripper_actions,
    libero_transform,
    oxe_config,
    rel2abs_gripper_actions,
    rt1_transform,
    standardize,
)


def test_binarize_takes_the_next_settled_state():
    raw = [1.0, 0.5, 0.97, 0.5, 0.02, 0.5]
    # t=5 has no settled successor: keeps the raw last value; t=3 -> closed (t=4); t=1 -> open (t=2)
    np.testing.assert_array_equal(binarize_gripper_actions(raw), [1, 1, 1, 0, 0, 0.5])


def test_rel2abs_carries_commands_and_starts_opposite_to_the_first():
    # 0 keep, +1 close, -1 open: the first command is "close", so the gripper was open before it
    np.testing.assert_array_equal(rel2abs_gripper_actions([0, 0, 1, 0, 0, -1, 0]), [1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(rel2abs_gripper_actions([0, -0.5, 0.05, 0.8]), [0, 1, 1, 0])
    np.testing.assert_array_equal(rel2abs_gripper_actions([0, 0.05, -0.05]), [1, 1, 1])  # no command: open
    np.testing.assert_array_equal(invert_gripper_actions([0, 1, 0.25]), [1, 0, 0.75])


def trajectory(length=5):
    state = np.arange(length * 7, dtype=np.float32).reshape(length, 7) ** 1.5 / 100
    action = np.tile(np.float32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0]), (length, 1))
    action[:, 6] = [0.0, 1.0, 0.5, 0.0, 0.3]
    return {
        "observation": {"state": state, "image_0": np.zeros((length, 4, 4, 3), np.uint8)},
        "action": action,
        "language_instruction": np.array([b"wipe"] * length),
    }


def test_bridge_orig_drops_first_and_last_steps_and_relabels_from_states():
    raw = trajectory()
    out = bridge_orig_transform(trajectory())
    assert out["action"].shape == (3, 7) and out["observation"]["image_0"].shape[0] == 3
    state = raw["observation"]["state"]
    np.testing.assert_allclose(out["action"][:, :6], state[2:5, :6] - state[1:4, :6], rtol=1e-6)
    # raw gripper after dropping step 0: [1, 0.5, 0, 0.3] -> binarized [1, 0, 0, 0.3]; the last step is dropped
    np.testing.assert_array_equal(out["action"][:, 6], [1, 0, 0])
    np.testing.assert_array_equal(out["observation"]["EEF_state"], state[1:4, :6])


def test_rt1_makes_the_relative_gripper_absolute():
    traj = {
        "observation": {"natural_language_instruction": np.array([b"pick coke can"] * 4)},
        "action": {
            "world_vector": np.ones((4, 3), np.float32),
            "rotation_delta": np.zeros((4, 3), np.float32),
            "gripper_closedness_action": np.array([[0.0], [1.0], [0.0], [-1.0]], np.float32),
        },
    }
    out = rt1_transform(traj)
    np.testing.assert_array_equal(out["action"][:, 6], [1, 0, 0, 1])
    np.testing.assert_array_equal(out["action"][:, :3], 1)
    assert out["language_instruction"][0] == b"pick coke can"


def test_libero_clips_and_inverts_the_gripper():
    action = np.zeros((3, 7), np.float32)
    action[:, 6] = [-1.0, 1.0, 0.4]  # -1 open, +1 close
    out = libero_transform({"observation": {"state": np.zeros((3, 8), np.float32)}, "action": action})
    np.testing.assert_allclose(out["action"][:, 6], [1.0, 0.0, 0.6])
    assert out["observation"]["gripper_state"].shape == (3, 2)


def test_unknown_datasets_and_broken_configs_are_reported():
    with pytest.raises(DataError, match="no Open X-Embodiment standardization for 'my_robot'.*bridge_orig"):
        oxe_config("my_robot")
    with pytest.raises(DataError, match="episode 3.*KeyError.*is the OXEConfig right"):
        standardize({"observation": {}, "action": np.zeros((2, 7))}, oxe_config("bridge_orig"), "episode 3")
    with pytest.raises(DataError, match="EEF_POS actions must have 7 dimensions, got 4"):
        standardize({"observation": {}, "action": np.zeros((2, 4))}, OXEConfig("image"), "episode 0")
