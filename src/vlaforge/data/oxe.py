"""Open X-Embodiment standardization: which camera, which action layout, which gripper convention.

OpenVLA trains on 7-D end-effector actions `[dx, dy, dz, droll, dpitch, dyaw, gripper]` with the gripper as
an absolute command, +1 = open and 0 = closed. Each OXE dataset stores something else, so each gets a
standardization applied to the whole trajectory before anything else (OpenVLA's
`OXE_STANDARDIZATION_TRANSFORMS` and `OXE_DATASET_CONFIGS`; reimplemented here in numpy, so it is testable
without tensorflow):

- bridge (`bridge_orig`, `bridge_oxe`): drop the first (all-zero) step, binarize the gripper (>0.95 open,
  <0.05 closed, values in between take the next settled state), relabel the movement from the reached states
  (`state[t+1] - state[t]`), which drops the last step.
- fractal (`fractal20220817_data`, RT-1): the gripper is relative (+1 close, -1 open, 0 keep); it becomes
  absolute by carrying the last command forward, starting from the opposite of the first command.
- LIBERO (`libero_*_no_noops`): gripper in -1 (open)..1 (close) -> clip to 0..1 and invert.

A trajectory is a dict of numpy arrays with a leading time axis:
`{"observation": {key: [T, ...]}, "action": [T, A] or {key: [T, ...]}, "language_instruction": [T], ...}`.
Register other datasets with `register_oxe_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaforge.data.episode import DataError

Trajectory = dict[str, Any]


# -------------------------------------------------------------------------------------------- gripper
def binarize_gripper_actions(gripper: np.ndarray) -> np.ndarray:
    """Continuous gripper openness `[T]` -> 1 (open, > 0.95) or 0 (closed, < 0.05).

    A value in between takes the state the gripper settles in next; in-between values at the very end keep
    the raw last value (scanning backwards from it, as the original does).
    """
    values = np.asarray(gripper, dtype=np.float64)
    is_open, is_closed = values > 0.95, values < 0.05
    out = np.empty_like(values)
    carry = values[-1] if len(values) else 0.0
    for t in range(len(values) - 1, -1, -1):
        if is_open[t] or is_closed[t]:
            carry = float(is_open[t])
        out[t] = carry
    return out.astype(np.float32)


def rel2abs_gripper_actions(gripper: np.ndarray) -> np.ndarray:
    """Relative gripper commands `[T]` (+1 close, -1 open, 0 keep; |x| > 0.1 counts) -> absolute 1 open / 0 closed.

    Before the first command the gripper is assumed to be in the opposite state of that command (open when
    there is none), i.e. the first command is taken not to be redundant.
    """
    values = np.asarray(gripper, dtype=np.float64)
    command = np.where(values < -0.1, 1, np.where(values > 0.1, -1, 0))  # +1 open, -1 close, 0 keep
    issued = np.flatnonzero(command)
    state = -command[issued[0]] if issued.size else 1
    out = np.empty(len(values), dtype=np.float32)
    for t, c in enumerate(command):
        state = c if c != 0 else state
        out[t] = state / 2 + 0.5  # -1 closed -> 0, +1 open -> 1
    return out


def invert_gripper_actions(gripper: np.ndarray) -> np.ndarray:
    """`1 - x`: flips a 1-closed convention into 1-open."""
    return (1.0 - np.asarray(gripper, dtype=np.float32)).astype(np.float32)


# ------------------------------------------------------------------------------------------ trajectories
def slice_trajectory(trajectory: Trajectory, start: int, stop: int | None) -> Trajectory:
    """Every per-step array of the trajectory cut to steps `start..stop-1` (nested dicts too)."""
    out: Trajectory = {}
    for key, value in trajectory.items():
        if isinstance(value, dict):
            out[key] = slice_trajectory(value, start, stop)
        elif key == "traj_metadata":
            out[key] = value
        else:
            out[key] = value[start:stop]
    return out


def relabel_bridge_actions(trajectory: Trajectory) -> Trajectory:
    """Movement = reached state deltas `state[t+1, :6] - state[t, :6]`; drops the last step (it has no next state)."""
    state = np.asarray(trajectory["observation"]["state"], dtype=np.float32)
    movement = state[1:, :6] - state[:-1, :6]  # [T-1, 6]
    out = slice_trajectory(trajectory, 0, -1)
    out["action"] = np.concatenate([movement, trajectory["action"][:-1, -1:]], axis=1).astype(np.float32)  # [T-1, 7]
    return out


def _bridge_states(trajectory: Trajectory) -> Trajectory:
    state = trajectory["observation"]["state"]
    trajectory["observation"]["EEF_state"] = state[:, :6]
    trajectory["observation"]["gripper_state"] = state[:, -1:]
    return trajectory


def bridge_orig_transform(trajectory: Trajectory) -> Trajectory:
    """Bridge V2 as OpenVLA releases it (`bridge_orig`)."""
    trajectory = slice_trajectory(trajectory, 1, None)  # the first step is all zeros
    action = np.asarray(trajectory["action"], dtype=np.float32)
    trajectory["action"] = np.concatenate([action[:, :6], binarize_gripper_actions(action[:, -1])[:, None]], axis=1)
    return _bridge_states(relabel_bridge_actions(trajectory))


def bridge_oxe_transform(trajectory: Trajectory) -> Trajectory:
    """Bridge as published in Open X-Embodiment (`bridge`), whose actions are a dict."""
    trajectory = slice_trajectory(trajectory, 1, None)
    act = trajectory["action"]
    gripper = np.asarray(act["open_gripper"], dtype=np.float32).reshape(-1, 1)
    trajectory["action"] = np.concatenate([act["world_vector"], act["rotation_delta"], gripper], axis=1)
    trajectory["language_instruction"] = trajectory["observation"]["natural_language_instruction"]
    return _bridge_states(relabel_bridge_actions(trajectory))


def rt1_transform(trajectory: Trajectory) -> Trajectory:
    """RT-1 / fractal: relative gripper -> absolute, actions from world_vector and rotation_delta."""
    act = trajectory["action"]
    gripper = rel2abs_gripper_actions(np.asarray(act["gripper_closedness_action"]).reshape(len(act["world_vector"])))
    trajectory["action"] = np.concatenate(
        [act["world_vector"], act["rotation_delta"], gripper[:, None]], axis=1
    ).astype(np.float32)  # [T, 7]
    trajectory["language_instruction"] = trajectory["observation"]["natural_language_instruction"]
    return trajectory


def libero_transform(trajectory: Trajectory) -> Trajectory:
    """LIBERO: gripper -1 open .. +1 close -> clip to 0..1 and invert to 1 open / 0 closed."""
    action = np.asarray(trajectory["action"], dtype=np.float32)
    gripper = invert_gripper_actions(np.clip(action[:, -1:], 0.0, 1.0))
    trajectory["action"] = np.concatenate([action[:, :6], gripper], axis=1)
    state = trajectory["observation"]["state"]
    trajectory["observation"]["EEF_state"] = state[:, :6]
    trajectory["observation"]["gripper_state"] = state[:, -2:]
    return trajectory


def identity_transform(trajectory: Trajectory) -> Trajectory:
    """For datasets already in the standard form (7-D flat actions, 1 = open)."""
    trajectory["action"] = np.asarray(trajectory["action"], dtype=np.float32)
    return trajectory


# ------------------------------------------------------------------------------------------------ configs
@dataclass(frozen=True)
class OXEConfig:
    """How one RLDS dataset maps onto OpenVLA's standard form."""

    image_key: str  # observation key of the primary camera (the one OpenVLA sees)
    wrist_key: str | None = None  # observation key of the wrist camera, if any
    state_keys: tuple[str, ...] = ()  # observation keys (after standardization) concatenated into the state
    standardize: Callable[[Trajectory], Trajectory] = identity_transform  # whole-trajectory transform
    fps: float = 10.0  # control frequency of the robot
    action_encoding: str = "EEF_POS"  # 7-D: xyz delta, rpy delta, gripper (1 = open)


_EEF_GRIPPER = ("EEF_state", "gripper_state")
OXE_CONFIGS: dict[str, OXEConfig] = {
    "bridge_orig": OXEConfig("image_0", None, _EEF_GRIPPER, bridge_orig_transform, fps=5.0),
    "bridge_oxe": OXEConfig("image", None, _EEF_GRIPPER, bridge_oxe_transform, fps=5.0),
    "fractal20220817_data": OXEConfig("image", None, ("base_pose_tool_reached", "gripper_closed"), rt1_transform, 3.0),
    **{
        f"libero_{suite}_no_noops": OXEConfig("image", "wrist_image", _EEF_GRIPPER, libero_transform, fps=20.0)
        for suite in ("spatial", "object", "goal", "10")
    },
}


def register_oxe_config(name: str, config: OXEConfig) -> None:
    """Adds (or replaces) the standardization of a dataset name."""
    OXE_CONFIGS[name] = config


def oxe_config(name: str) -> OXEConfig:
    """The standardization of dataset `name`; an unknown name lists the known ones."""
    if name not in OXE_CONFIGS:
        raise DataError(
            f"no Open X-Embodiment standardization for {name!r}; known: {', '.join(sorted(OXE_CONFIGS))}. "
            "Pass config=OXEConfig(image_key=..., standardize=...) or register one with register_oxe_config"
        )
    return OXE_CONFIGS[name]


def standardize(trajectory: Trajectory, config: OXEConfig, where: str) -> Trajectory:
    """Applies `config.standardize` and checks the result is `[T, 7]` actions with the gripper in 0..1."""
    try:
        out = config.standardize(trajectory)
    except (KeyError, IndexError, ValueError) as err:
        raise DataError(f"{where}: the standardization failed ({type(err).__name__}: {err}); "
                        "is the OXEConfig right for this dataset?") from err  # fmt: skip
    action = out.get("action")
    if not isinstance(action, np.ndarray) or action.ndim != 2:
        raise DataError(f"{where}: standardized actions must be an array [T, A], got {type(action).__name__}")
    if config.action_encoding == "EEF_POS" and action.shape[1] != 7:
        raise DataError(f"{where}: EEF_POS actions must have 7 dimensions, got {action.shape[1]}")
    return out
