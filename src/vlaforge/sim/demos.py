"""Scripted demonstrations: run Meta-World's experts with fixed seeds, keep the successes as a LeRobotDataset.

    generate_demos(DemoConfig(suite="demo", episodes_per_task=30, out=Path("data/mw-demo")))

Each episode `i` of task `t` starts from `episode_seed(seed, t, i)` (seed 0 by default, evaluation uses 7),
stops at the first success (what the demo-feasibility study found best for learning) and is written as
one LeRobot episode: a video per camera, `observation.state` (hand xyz + gripper), `action` (the expert's
4-D action, clipped to [-1, 1]) and the episode's instruction as its task string. Frame `t` pairs
observation `o_t` with the action taken from it; the observation after the last action is not stored.

Episodes that fail are dropped and counted. The dataset is committed episode by episode, so an interrupted
run resumes where it stopped when the same command is run again (episodes already in the dataset are
skipped, identified by task and episode index in their metadata; failed ones are simply retried and fail
again deterministically). On completion the dataset is packed, its statistics are computed and it is
validated (`LeRobotWriter.finalize`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vlaforge.sim.env import Observation, episode_seed
from vlaforge.sim.policies import ExpertPolicy
from vlaforge.sim.rollout import EpisodeJob, EpisodeResult, run_episodes
from vlaforge.sim.suites import Suite, get_suite, resolve_tasks

logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """What to record. Every field is also a `vlaforge sim demos` flag."""

    out: Path = Path("data/demos")  # dataset directory (resumed if it already holds demos made by this command)
    suite: str = "demo"  # task suite (Meta-World suites only: the experts are Meta-World's)
    tasks: tuple[str, ...] = ()  # record these tasks instead of the suite's own
    episodes_per_task: int = 30  # episodes attempted per task (failures are dropped, not replaced)
    seed: int = 0  # base seed of the initial states (evaluation defaults to 7: held-out positions)
    image_size: int | None = None  # square camera resolution (None: the suite's, 112 px for `demo`)
    cameras: tuple[str, ...] = ()  # cameras to record (empty: the suite's, "corner")
    max_steps: int | None = None  # episode step limit (None: the suite's)
    num_envs: int = 4  # environments stepped together
    num_workers: int = 2  # worker processes (0: in the main process)
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be at least 1, got {self.episodes_per_task}")


@dataclass
class DemoSummary:
    """What `generate_demos` did."""

    kept: int  # successful episodes written in this run
    dropped: int  # failed episodes not written
    skipped: int  # episodes already in the dataset from an earlier, interrupted run
    total: int  # episodes in the dataset now
    interrupted: bool  # Ctrl-C stopped the run (rerun the same command to resume)
    dropped_episodes: list[dict[str, Any]]  # task, episode, seed and reason of each dropped episode


def demo_features(cameras: tuple[str, ...], image_size: int, state_dim: int = 4, action_dim: int = 4) -> dict:
    """The LeRobot feature spec of the recorded demos."""
    features: dict[str, dict[str, Any]] = {
        f"observation.images.{camera}": {
            "dtype": "video", "shape": [image_size, image_size, 3], "names": ["height", "width", "channels"]
        }
        for camera in cameras
    }  # fmt: skip
    features["observation.state"] = {"dtype": "float32", "shape": [state_dim], "names": ["x", "y", "z", "gripper"]}
    features["action"] = {"dtype": "float32", "shape": [action_dim], "names": ["dx", "dy", "dz", "gripper"]}
    return features


class DemoRecorder:
    """An `EpisodeObserver` that buffers each episode's frames and writes the successful ones.

    Args:
        writer: the `LeRobotWriter` to add episodes to.
        settings: recording settings stored with every episode (checked when resuming).
    """

    def __init__(self, writer: Any, settings: dict[str, Any]) -> None:
        self.writer = writer
        self.settings = settings
        self.kept = 0
        self.dropped: list[dict[str, Any]] = []
        self._frames: dict[EpisodeJob, list[tuple[Observation, np.ndarray]]] = {}
        self._pending: dict[EpisodeJob, Observation] = {}

    def on_start(self, job: EpisodeJob, observation: Observation) -> None:
        self._frames[job] = []
        self._pending[job] = observation

    def on_step(self, job: EpisodeJob, action: np.ndarray, observation: Observation) -> None:
        self._frames[job].append((self._pending[job], np.asarray(action, dtype=np.float32)))  # (o_t, a_t)
        self._pending[job] = observation

    def on_end(self, job: EpisodeJob, result: EpisodeResult) -> None:
        steps = self._frames.pop(job, [])
        self._pending.pop(job, None)
        if not result.success or not steps:
            self.dropped.append({"task": job.spec.task, "episode": job.episode, "seed": job.seed,
                                 "reason": result.failure_reason})  # fmt: skip
            return
        frames = {
            f"observation.images.{camera}": np.stack([obs.images[camera] for obs, _ in steps])  # [T, H, W, 3]
            for camera in job.spec.cameras
        }
        frames["observation.state"] = np.stack([obs.state for obs, _ in steps])  # [T, 4]
        frames["action"] = np.stack([action for _, action in steps])  # [T, 4]
        metadata = {"task_name": job.spec.task, "episode": job.episode, "seed": job.seed, "settings": self.settings}
        self.writer.add_episode(frames, task=result.instruction, metadata=metadata)
        self.kept += 1


def _open_writer(config: DemoConfig, suite: Suite, features: dict, settings: dict) -> tuple[Any, set]:
    """A writer for `config.out` (resumed if it holds earlier demos) and the (task, episode) pairs it has."""
    from vlaforge.data.lerobot import INFO_PATH, LeRobotWriter

    resume = (config.out / INFO_PATH).is_file()
    writer = LeRobotWriter(config.out, fps=suite.fps, features=features, robot_type="sawyer", resume=resume)
    done = set()
    for index in range(writer.num_episodes):
        metadata = writer.episode_metadata(index)
        if metadata.get("settings") != settings:
            raise ValueError(
                f"{config.out} holds demos recorded with other settings ({metadata.get('settings')}); "
                f"use the same flags to resume, or choose another --out"
            )
        done.add((metadata["task_name"], metadata["episode"]))
    return writer, done


def generate_demos(config: DemoConfig) -> DemoSummary:
    """Records expert demonstrations into a LeRobotDataset v3 at `config.out` (see the module docstring).

    Raises:
        ValueError: for a non-Meta-World suite, an unknown task, or a dataset made with other settings.
    """
    suite = get_suite(config.suite)
    if suite.family != "metaworld":
        raise ValueError(f"scripted demos exist for Meta-World suites only; '{suite.name}' is {suite.family}")
    tasks = resolve_tasks(suite, config.tasks)
    specs = {task: suite.env_spec(task, config.cameras or None, config.image_size, config.max_steps) for task in tasks}
    first = next(iter(specs.values()))
    settings = {"seed": config.seed, "cameras": list(first.cameras), "image_size": first.image_size,
                "max_steps": first.max_steps}  # fmt: skip
    writer, done = _open_writer(config, suite, demo_features(first.cameras, first.image_size), settings)
    jobs = [EpisodeJob(specs[task], i, episode_seed(config.seed, task, i))
            for task in tasks for i in range(config.episodes_per_task) if (task, i) not in done]  # fmt: skip
    recorder = DemoRecorder(writer, settings)
    bar = tqdm(total=len(jobs), desc=f"demos {suite.name}", unit="ep", disable=not config.progress)
    episodes = run_episodes(ExpertPolicy(), jobs, suite.action_dim, config.num_envs, config.num_workers, [recorder])
    interrupted = False
    try:
        for _ in episodes:
            bar.update(1)
            bar.set_postfix(kept=recorder.kept, dropped=len(recorder.dropped))
    except KeyboardInterrupt:
        interrupted = True
        episodes.close()
    finally:
        bar.close()
    from vlaforge.data.lerobot import STATS_PATH

    already_final = recorder.kept == 0 and (config.out / STATS_PATH).is_file()
    if not interrupted and writer.num_episodes > 0 and not already_final:
        writer.finalize(progress=config.progress)  # pack, statistics, validation
    return DemoSummary(recorder.kept, len(recorder.dropped), len(done), writer.num_episodes, interrupted,
                       recorder.dropped)  # fmt: skip
