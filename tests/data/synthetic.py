"""Synthetic episodes for the data tests: smooth images (codec-friendly) and random actions/states."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlaforge.data.episode import ArrayFrames, Episode, EpisodeDataset

CAMERA = "observation.images.corner"


def smooth_frames(length: int, size: int, seed: int) -> np.ndarray:
    """`[T, size, size, 3]` uint8 gradients that move with t: compress well, differ per episode and step."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    frames = []
    for t in range(length):
        red = 60 + 120 * x + 8 * t
        green = 40 + 100 * y + 20 * seed
        blue = 90 + 50 * np.sin(3 * x + 2 * y + 0.3 * t + seed)
        frames.append(np.stack([red, green, blue], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def features(size: int = 32, action_dim: int = 4, state_dim: int = 3, camera_dtype: str = "video") -> dict:
    return {
        CAMERA: {"dtype": camera_dtype, "shape": [size, size, 3], "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
    }


def episode_arrays(length: int, seed: int, size: int = 32, action_dim: int = 4, state_dim: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {
        CAMERA: smooth_frames(length, size, seed),
        "observation.state": rng.normal(size=(length, state_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(length, action_dim)).astype(np.float32),
    }


def write_dataset(root: Path, lengths=(5, 7, 6), tasks=("pick the cube", "open the drawer"), finalize=True, **kw):
    """Writes one episode per length; returns the arrays written, per episode."""
    from vlaforge.data.lerobot import LeRobotWriter

    writer = LeRobotWriter(root, fps=10, features=features(**kw.pop("feature_kw", {})), **kw)
    written = []
    for index, length in enumerate(lengths):
        arrays = episode_arrays(length, seed=index)
        writer.add_episode(arrays, task=tasks[index % len(tasks)], metadata={"seed": index})
        written.append(arrays)
    if finalize:
        writer.finalize(progress=False)
    return written


class MemoryDataset(EpisodeDataset):
    """An in-memory `EpisodeDataset` (no files, no codec): fast fixtures for statistics and batches."""

    def __init__(self, name: str, episodes: list[dict], fps: float = 10.0) -> None:
        self.name, self.fps, self._episodes = name, fps, episodes

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    def episode_lengths(self) -> list[int]:
        return [len(e["action"]) for e in self._episodes]

    def episode(self, index: int) -> Episode:
        raw = self._episodes[self._check_index(index)]
        cameras = {name: ArrayFrames(frames) for name, frames in raw.get("cameras", {}).items()}
        return Episode(self.name, index, raw["task"], raw["action"], raw.get("state"), cameras)


def memory_dataset(name: str, lengths=(5, 4), action_dim=7, scale=1.0, size=16, seed=0, tasks=None):
    """A `MemoryDataset` with random actions of the given scale, states, and two cameras of smooth frames."""
    rng = np.random.default_rng(seed)
    episodes = []
    for index, length in enumerate(lengths):
        action = rng.uniform(-scale, scale, (length, action_dim)).astype(np.float32)
        if action_dim == 7:
            action[:, 6] = rng.integers(0, 2, length)  # gripper 0 / 1
        episodes.append(
            {
                "action": action,
                "state": rng.normal(size=(length, 3)).astype(np.float32),
                "task": (tasks or ["pick up the red block", "open the top drawer"])[index % 2],
                "cameras": {
                    "main": smooth_frames(length, size, seed * 10 + index),
                    "wrist": smooth_frames(length, size, seed * 10 + index + 5)[:, ::-1].copy(),
                },
            }
        )
    return MemoryDataset(name, episodes)
