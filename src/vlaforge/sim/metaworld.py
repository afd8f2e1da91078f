"""Meta-World v3 (MuJoCo) behind the common `SimEnv` interface, with the fast renderer.

    env = MetaWorldEnv("drawer-close-v3", cameras=("corner",), image_size=224)
    obs = env.reset(seed=0)                   # obs.images["corner"]: [224, 224, 3] uint8, upright
    result = env.step(np.zeros(4))            # result.success, result.observation
    env.close()

Initial states. Meta-World draws each task's object and goal positions ("rand_vec") at reset. Its
benchmarks (MT1, MT10, ...) pre-draw 50 of them per task and freeze one per episode with `set_task`. We
instead let the environment draw a fresh vector from its own seeded RNG at every reset (the mechanism
Meta-World's `seeded_rand_vec` flag provides), so episode `i` of a run with seed `s` always starts from
the same state, any number of episodes is possible, and another seed gives held-out positions. The goal
is observable in the state vector (as in MT benchmarks): the scripted experts need it; learned policies
only get the images, the proprioception and the instruction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.sim.env import Observation, StepResult, choose_instruction
from vlaforge.sim.instructions import METAWORLD_INSTRUCTIONS
from vlaforge.sim.render import FastRenderer, configure_gl
from vlaforge.sim.suites import validate_task

# Pick EGL/OSMesa now, at import: MuJoCo reads MUJOCO_GL once, when it is first imported, so this must happen
# before any `import mujoco` (a user script may import mujoco right after importing this module).
configure_gl()

STATE_DIM = 4  # proprioception: hand x, y, z (m) and gripper opening, the first 4 entries of Meta-World's obs
PRIVILEGED_DIM = 39  # Meta-World's full observation: hand, gripper, 2 objects (pos + quat), previous frame, goal


class MetaWorldEnv:
    """One Meta-World v3 task, rendered offscreen by `FastRenderer`.

    Args:
        task: a Meta-World task name, e.g. "drawer-close-v3" (see `vlaforge.sim.suites.METAWORLD_TASKS`).
        cameras: camera names to render: corner, corner2, corner3, corner4, topview, behindGripper,
            gripperPOV. The first is the primary one.
        image_size: square image side in pixels.
        max_steps: episode step limit (Meta-World's default is 500).

    Raises:
        ValueError: for an unknown task or camera (the message lists the valid names).
    """

    action_dim = 4

    def __init__(
        self, task: str, cameras: tuple[str, ...] = ("corner",), image_size: int = 224, max_steps: int = 500
    ) -> None:
        validate_task("metaworld", task)
        if not cameras:
            raise ValueError("give at least one camera, e.g. cameras=('corner',)")
        import metaworld

        self.task = task
        self.cameras = tuple(cameras)
        self.max_steps = int(max_steps)
        self._env = metaworld.ALL_V3_ENVIRONMENTS[task]()  # no render_mode: we render ourselves
        self._env.max_path_length = self.max_steps
        self._env._partially_observable = False  # goal in the state vector, as in the MT benchmarks
        del self._env.sawyer_observation_space  # a cached property: recomputed for the new observability
        self._env._freeze_rand_vec = False  # draw a new initial state at every reset ...
        self._env.seeded_rand_vec = True  # ... from the env's seeded RNG (not the global numpy one)
        self._env._set_task_called = True  # no benchmark Task object: the seeded draw replaces it
        self._check_cameras()
        self._renderer = FastRenderer(self._env.model, image_size, image_size)
        self._instruction = ""
        self._steps = 0

    def _check_cameras(self) -> None:
        import mujoco

        model = self._env.model
        valid = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        for camera in self.cameras:
            if camera not in valid:
                self._env.close()
                raise ValueError(f"unknown Meta-World camera '{camera}'; valid cameras: {', '.join(valid)}")

    def reset(self, seed: int) -> Observation:
        """Starts an episode; the initial object/goal positions and the instruction depend only on `seed`."""
        self._env.seed(int(seed))  # seeds the RNG that the initial positions are drawn from
        raw, _ = self._env.reset()  # [39] float64
        self._steps = 0
        self._instruction = choose_instruction(METAWORLD_INSTRUCTIONS[self.task], int(seed))
        return self._observe(raw)

    def step(self, action: np.ndarray) -> StepResult:
        """Applies one 4-D action (delta xyz, gripper), clipped to Meta-World's [-1, 1] action box.

        Raises:
            ValueError: for an action that is not 4 finite numbers.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)  # [4]
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"Meta-World needs 4 finite action values, got {np.asarray(action).tolist()}")
        raw, reward, _, truncated, info = self._env.step(np.clip(action, -1.0, 1.0))
        self._steps += 1
        extras = {k: float(v) for k, v in info.items() if np.isscalar(v)}
        return StepResult(self._observe(raw), float(reward), bool(info["success"]), bool(truncated), extras)

    def _observe(self, raw: np.ndarray) -> Observation:
        images = {camera: self._renderer.render(self._env.data, camera) for camera in self.cameras}
        return Observation(
            images=images,
            state=raw[:STATE_DIM].astype(np.float32),  # [4] hand xyz + gripper opening
            instruction=self._instruction,
            task=self.task,
            step=self._steps,
            privileged=raw.astype(np.float64),  # [39]
        )

    def close(self) -> None:
        """Frees the renderer's GL context and the simulator."""
        self._renderer.close()
        self._env.close()


class MetaWorldExpert:
    """Meta-World's scripted expert for every task, as a function of the privileged state.

    The experts are hand-written controllers shipped with Meta-World (`metaworld.policies`); they need the
    full 39-D state with the goal, so they read `Observation.privileged`.
    """

    def __init__(self) -> None:
        self._experts: dict[str, Any] = {}

    def action(self, task: str, privileged: np.ndarray) -> np.ndarray:
        """The expert's `[4]` action for `task` in state `privileged` (`[39]`), clipped to [-1, 1]."""
        if task not in self._experts:
            import warnings

            from metaworld.policies import ENV_POLICY_MAP

            validate_task("metaworld", task)
            self._experts[task] = ENV_POLICY_MAP[task]()
            # The experts' gains can exceed the action box; Meta-World warns on every call. We clip instead.
            warnings.filterwarnings("ignore", message="Constant.*may be too high", category=UserWarning)
        return np.clip(self._experts[task].get_action(privileged), -1.0, 1.0).astype(np.float32)
