"""The one interface every simulated environment exposes to every policy.

```
            EnvSpec(family, task, cameras, image_size, max_steps)
                 │ make_env
                 ▼
  reset(seed) ──► Observation(images, state, instruction, task, step, privileged)
  step(action) ─► StepResult(observation, reward, success, truncated, info)
```

An `Observation` carries everything a policy may look at: one upright `[H, W, 3]` uint8 image per camera,
the robot's proprioceptive state, and a natural-language instruction (one of a few paraphrases per task,
chosen per episode from the seed). `privileged` holds the simulator's full state vector (object and goal
poses); only scripted experts may read it, never a learned policy.

Actions are the environment's native ones (Meta-World: 4-D, delta xyz + gripper in [-1, 1]; PushT: 2-D
target position in pixels; LIBERO: 7-D delta pose + gripper).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

EnvFamily = Literal["metaworld", "pusht", "libero"]


@dataclass
class Observation:
    """What a policy sees at one step of one episode."""

    images: dict[str, np.ndarray]  # camera name -> [H, W, 3] uint8, upright; insertion order = camera order
    state: np.ndarray  # [S] float32 proprioception (Meta-World: hand xyz + gripper opening, S = 4)
    instruction: str  # natural-language task description for this episode
    task: str  # the task's name in its suite, e.g. "drawer-close-v3"
    step: int = 0  # actions taken so far in this episode (0 right after reset)
    privileged: np.ndarray | None = None  # full simulator state; for scripted experts only

    @property
    def image(self) -> np.ndarray:
        """The first camera's image, `[H, W, 3]` uint8 (what single-camera policies use)."""
        return next(iter(self.images.values()))


@dataclass
class StepResult:
    """What `SimEnv.step` returns."""

    observation: Observation  # the observation after the action
    reward: float  # the environment's dense reward (reported, not used for success)
    success: bool  # the task is solved in this state
    truncated: bool = False  # the environment cannot continue (its own step limit)
    info: dict[str, Any] = field(default_factory=dict)  # environment-specific extras


class SimEnv(Protocol):
    """An environment behind the common interface (Meta-World, PushT, LIBERO)."""

    task: str  # the task's name
    action_dim: int  # A, the length of the native action
    max_steps: int  # episode step limit used by the harness

    def reset(self, seed: int) -> Observation:
        """Starts an episode whose initial state (and instruction) depends only on `seed`."""
        ...

    def step(self, action: np.ndarray) -> StepResult:
        """Applies one `[A]` action."""
        ...

    def close(self) -> None:
        """Frees renderers and simulator resources."""
        ...


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to build one environment, picklable so worker processes can build it."""

    family: EnvFamily  # which adapter: "metaworld", "pusht" or "libero"
    task: str  # task name within the family (validated by the adapter)
    cameras: tuple[str, ...] = ("corner",)  # cameras to render, in order; the first is the primary one
    image_size: int = 224  # square image side in pixels
    max_steps: int = 500  # episode step limit


def make_env(spec: EnvSpec) -> SimEnv:
    """Builds the environment described by `spec` (adapters are imported lazily).

    Raises:
        ValueError: for an unknown family, task or camera (the message lists the valid ones).
    """
    if spec.family == "metaworld":
        from vlaforge.sim.metaworld import MetaWorldEnv

        return MetaWorldEnv(spec.task, cameras=spec.cameras, image_size=spec.image_size, max_steps=spec.max_steps)
    if spec.family == "pusht":
        from vlaforge.sim.pusht import PushTEnv

        return PushTEnv(spec.task, cameras=spec.cameras, image_size=spec.image_size, max_steps=spec.max_steps)
    if spec.family == "libero":
        from vlaforge.sim.libero import LiberoEnv

        return LiberoEnv(spec.task, cameras=spec.cameras, image_size=spec.image_size, max_steps=spec.max_steps)
    raise ValueError(f"unknown environment family '{spec.family}'; choose one of: metaworld, pusht, libero")


def episode_seed(seed: int, task: str, episode: int) -> int:
    """The initial-state seed of episode `episode` of `task` in a run with base `seed`.

    Mixing the task name in gives every task its own sequence of initial states; a different base seed gives
    different (held-out) initial states, e.g. demos with seed 0 and evaluation with seed 7.
    """
    task_code = zlib.crc32(task.encode())  # a stable 32-bit code (Python's hash() is salted per process)
    return int(np.random.SeedSequence([seed, task_code, episode]).generate_state(1)[0])


def choose_instruction(paraphrases: list[str], seed: int) -> str:
    """One of a task's paraphrases, chosen from the episode seed (independent of the initial-state draw)."""
    rng = np.random.default_rng([seed, 1])
    return paraphrases[int(rng.integers(len(paraphrases)))]
