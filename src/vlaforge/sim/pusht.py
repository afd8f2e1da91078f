"""PushT (gym-pusht) behind the common `SimEnv` interface: a cheap 2-D second environment.

A round agent pushes a T-shaped block onto a fixed target; success is at least 95% overlap. The action is
the agent's target position in pixels (2-D, in [0, 512]); the proprioceptive state is the agent's position.
It runs at hundreds of steps per second with pixels, so it is handy for quick end-to-end checks. It has no
scripted expert.
"""

from __future__ import annotations

import numpy as np

from vlaforge.sim.env import Observation, StepResult, choose_instruction
from vlaforge.sim.instructions import PUSHT_INSTRUCTIONS
from vlaforge.sim.suites import validate_task

CAMERA = "top"  # PushT renders one top-down view; this is its name in `Observation.images`


class PushTEnv:
    """The gym-pusht task with pixel observations.

    Args:
        task: must be "pusht".
        cameras: must be ("top",): PushT has one view.
        image_size: square image side in pixels.
        max_steps: episode step limit (gym-pusht registers 300).

    Raises:
        ValueError: for another task or camera.
        ImportError: when gym-pusht is not installed (it is in `vlaforge[sim]`).
    """

    action_dim = 2

    def __init__(
        self, task: str = "pusht", cameras: tuple[str, ...] = (CAMERA,), image_size: int = 96, max_steps: int = 300
    ):
        validate_task("pusht", task)
        if tuple(cameras) != (CAMERA,):
            raise ValueError(f"PushT has a single camera named '{CAMERA}', got {list(cameras)}")
        try:
            from gym_pusht.envs import PushTEnv as _GymPushT
        except ImportError as err:
            raise ImportError("PushT needs gym-pusht: pip install 'vlaforge[sim]'") from err
        self.task = task
        self.cameras = (CAMERA,)
        self.max_steps = int(max_steps)
        self._env = _GymPushT(obs_type="pixels_agent_pos", observation_width=image_size, observation_height=image_size)
        self._instruction = ""
        self._steps = 0

    def reset(self, seed: int) -> Observation:
        """Starts an episode; the agent and block positions and the instruction depend only on `seed`."""
        raw, _ = self._env.reset(seed=int(seed))
        self._steps = 0
        self._instruction = choose_instruction(PUSHT_INSTRUCTIONS[self.task], int(seed))
        return self._observe(raw)

    def step(self, action: np.ndarray) -> StepResult:
        """Moves the agent toward the 2-D pixel target `action`, clipped to [0, 512].

        Raises:
            ValueError: for an action that is not 2 finite numbers.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)  # [2]
        if action.shape != (self.action_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(f"PushT needs 2 finite action values, got {np.asarray(action).tolist()}")
        raw, reward, _, truncated, info = self._env.step(np.clip(action, 0.0, 512.0))
        self._steps += 1
        extras = {"coverage": float(info.get("coverage", 0.0))}
        return StepResult(self._observe(raw), float(reward), bool(info["is_success"]), bool(truncated), extras)

    def _observe(self, raw: dict) -> Observation:
        return Observation(
            images={CAMERA: np.ascontiguousarray(raw["pixels"], dtype=np.uint8)},  # [H, W, 3]
            state=np.asarray(raw["agent_pos"], dtype=np.float32),  # [2] agent x, y in pixels
            instruction=self._instruction,
            task=self.task,
            step=self._steps,
            privileged=None,
        )

    def close(self) -> None:
        """Closes the gym-pusht environment."""
        self._env.close()
