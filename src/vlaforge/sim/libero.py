"""LIBERO (robosuite) behind the common `SimEnv` interface. Optional: `pip install 'vlaforge[libero]'`.

LIBERO cannot run on the machines vlaforge is developed on: its scene and object assets (~200 MB) are not
in the pip package and cannot be downloaded there. This adapter is therefore tested against a stand-in
environment with LIBERO's interface (see tests/sim/test_libero.py); if you have LIBERO and its assets,
`vlaforge eval --suite libero_spatial ...` uses it for real.

What the adapter does, following the original OpenVLA LIBERO evaluation (`experiments/robot/libero`):
- Tasks are addressed as "<suite>/<index>", e.g. "libero_spatial/3"; the instruction is the task's own
  language (LIBERO has one phrasing per task).
- Initial states are LIBERO's fixed ones: `reset(seed)` uses `init_states[seed % len(init_states)]`, then
  waits 10 steps with a no-op action (gripper open) while objects settle; those steps are not counted.
- Images: "agentview" (third person) and "wrist" (eye in hand), rotated by 180 degrees to be upright,
  at `image_size` pixels. State (8-D): end-effector position (3), orientation as axis-angle (3), gripper
  finger positions (2).
- Actions are LIBERO's native 7-D ones (delta position, delta axis-angle, gripper: -1 open, +1 close);
  a policy trained on another convention must convert (OpenVLA's LIBERO policies binarize and invert).
- Success is the environment's `done` flag.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaforge.sim.env import Observation, StepResult
from vlaforge.sim.suites import validate_task

CAMERA_KEYS = {"agentview": "agentview_image", "wrist": "robot0_eye_in_hand_image"}  # our name -> LIBERO obs key
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # no motion, gripper open
SETTLE_STEPS = 10  # no-op steps after each reset while objects fall into place (as the original)
STATE_DIM = 8


@dataclass
class LiberoTask:
    """One LIBERO task: what the adapter needs from the benchmark."""

    language: str  # the task's instruction
    bddl_file: str  # path of the task's BDDL scene description
    init_states: np.ndarray  # [N, D] fixed initial simulator states (50 per task in LIBERO)


def load_libero_task(suite: str, index: int) -> LiberoTask:
    """Reads task `index` of LIBERO suite `suite` from the installed `libero` package.

    Raises:
        ImportError: when LIBERO is not installed, with how to install it.
    """
    try:
        from libero.libero import benchmark, get_libero_path
    except ImportError as err:
        raise ImportError(
            "LIBERO is not installed. Install it with `pip install 'vlaforge[libero]'` and download its assets "
            "(see docs/simulation.md); LIBERO cannot run without them."
        ) from err
    task_suite = benchmark.get_benchmark_dict()[suite]()
    task = task_suite.get_task(index)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    return LiberoTask(task.language, bddl, np.asarray(task_suite.get_task_init_states(index)))


def make_libero_backend(task: LiberoTask, image_size: int) -> Any:
    """LIBERO's offscreen robosuite environment for `task`."""
    from libero.libero.envs import OffScreenRenderEnv

    env = OffScreenRenderEnv(bddl_file_name=task.bddl_file, camera_heights=image_size, camera_widths=image_size)
    env.seed(0)  # LIBERO's own randomness; initial states come from `init_states`
    return env


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """`[4]` quaternion (x, y, z, w, robosuite's order) to a `[3]` axis-angle vector (axis * angle)."""
    quat = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(quat[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:  # no rotation: the axis is undefined
        return np.zeros(3)
    return quat[:3] / sin_half * 2.0 * np.arccos(w)


class LiberoEnv:
    """One LIBERO task behind `SimEnv`.

    Args:
        task: "<suite>/<index>", e.g. "libero_spatial/3".
        cameras: any of "agentview", "wrist"; the first is the primary one.
        image_size: square image side in pixels.
        max_steps: episode step limit (not counting the settling steps).
        task_loader: `(suite, index) -> LiberoTask` (default: read from the installed `libero`).
        backend_factory: `(LiberoTask, image_size) -> env` with LIBERO's `reset / set_init_state / step /
            close` interface (default: LIBERO's `OffScreenRenderEnv`). Tests pass a stand-in.

    Raises:
        ValueError: for an unknown task or camera.
        ImportError: when LIBERO is not installed and no stand-in is given.
    """

    action_dim = 7

    def __init__(
        self,
        task: str,
        cameras: tuple[str, ...] = ("agentview",),
        image_size: int = 224,
        max_steps: int = 220,
        task_loader: Callable[[str, int], LiberoTask] = load_libero_task,
        backend_factory: Callable[[LiberoTask, int], Any] = make_libero_backend,
    ) -> None:
        validate_task("libero", task)
        for camera in cameras:
            if camera not in CAMERA_KEYS:
                raise ValueError(f"unknown LIBERO camera '{camera}'; valid cameras: {', '.join(CAMERA_KEYS)}")
        suite, index = task.split("/")  # e.g. "libero_spatial", "3"
        self.task = task
        self.cameras = tuple(cameras)
        self.max_steps = int(max_steps)
        self.libero_task = task_loader(suite, int(index))
        self._env = backend_factory(self.libero_task, image_size)
        self._steps = 0

    def reset(self, seed: int) -> Observation:
        """Starts an episode from LIBERO's fixed initial state number `seed % len(init_states)`."""
        states = self.libero_task.init_states
        self._env.reset()
        raw = self._env.set_init_state(states[int(seed) % len(states)])
        for _ in range(SETTLE_STEPS):
            raw, _, _, _ = self._env.step(NOOP_ACTION.copy())
        self._steps = 0
        return self._observe(raw)

    def step(self, action: np.ndarray) -> StepResult:
        """Applies one native 7-D action.

        Raises:
            ValueError: for an action that is not 7 finite numbers.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)  # [7]
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"LIBERO needs 7 finite action values, got {np.asarray(action).tolist()}")
        raw, reward, done, info = self._env.step(action)
        self._steps += 1
        return StepResult(self._observe(raw), float(reward), bool(done), False, dict(info or {}))

    def _observe(self, raw: dict[str, np.ndarray]) -> Observation:
        images = {cam: np.ascontiguousarray(raw[CAMERA_KEYS[cam]][::-1, ::-1]) for cam in self.cameras}  # 180 deg
        state = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)  # [3 + 3 + 2]
        return Observation(images, state, self.libero_task.language, self.task, self._steps, None)

    def close(self) -> None:
        """Closes the robosuite environment."""
        self._env.close()
