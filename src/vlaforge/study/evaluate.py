"""Evaluates one arm's checkpoint in the simulator, timing the policy, and returns the arm's result record."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.sim.env import Observation
from vlaforge.study.arms import Arm
from vlaforge.study.config import StudyConfig


class TimedPolicy:
    """Wraps a policy and adds up the seconds spent in `act` (model time, not simulation time)."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.name, self.seconds, self.calls = policy, policy.name, 0.0, 0
        self.quant = getattr(policy, "quant", None)

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        start = time.perf_counter()
        actions = self.policy.act(observations)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return actions

    def close(self) -> None:
        self.policy.close()


def evaluate_arm(cfg: StudyConfig, arm: Arm, checkpoint: Path, out: Path) -> dict[str, Any]:
    """Runs `cfg.eval_episodes` per task of the arm's suite; returns successes, per task, and timing."""
    from vlaforge.infer.chunking import ChunkExecution
    from vlaforge.sim.evaluate import EvalConfig, evaluate
    from vlaforge.sim.policies import CheckpointPolicy
    from vlaforge.study.run import CAMERA, EVAL_SEED

    policy = TimedPolicy(CheckpointPolicy(checkpoint, quant=arm.quant))
    chunk = int(getattr(policy.policy.model.config, "action_chunk", 1))
    config = EvalConfig(
        suite=arm.suite, episodes_per_task=cfg.eval_episodes, seed=EVAL_SEED, image_size=cfg.image_size,
        cameras=(CAMERA,), max_steps=cfg.max_steps, num_envs=6, num_workers=2, out=out, progress=True,
        chunk_execution=ChunkExecution("open-loop", execute_steps=min(cfg.execute_steps, chunk)),
    )  # fmt: skip
    start = time.perf_counter()
    try:
        report = evaluate(policy, config)
    finally:
        policy.close()
    overall = report["overall"]
    env_steps = overall["mean_length"] * overall["episodes"]
    return {
        "successes": overall["successes"],
        "episodes": overall["episodes"],
        "tasks": {task: [row["successes"], row["episodes"]] for task, row in report["tasks"].items()},
        "eval_seconds": round(time.perf_counter() - start, 1),
        "policy_ms_per_step": round(1e3 * policy.seconds / max(env_steps, 1), 3),
        "policy_calls": policy.calls,
    }
