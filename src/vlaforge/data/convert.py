"""Conversion of any supported dataset (HDF5, RLDS, LeRobot) into a LeRobotDataset v3.0.

    ds = convert_to_lerobot(HDF5Dataset("demos.hdf5", task="lift the cube"), "out/lift")
    ds = convert_to_lerobot(RLDSDataset("bridge_orig/1.0.0"), "out/bridge", resize=224)

Cameras become `observation.images.<camera>` videos, the state `observation.state`, the (standardized)
actions `action`. Each episode keeps its source index and metadata in its `vlaforge_metadata`. An interrupted
conversion continues with `resume=True`. Imports no torch (runs in the RLDS venv).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vlaforge.data.episode import DataError, Episode, EpisodeDataset
from vlaforge.data.lerobot import CAMERA_PREFIX, LeRobotDataset, LeRobotWriter
from vlaforge.data.video import VideoEncoding


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """`[T, H, W, 3]` -> `[T, size, size, 3]` with an antialiased Lanczos filter (as the original's lanczos3)."""
    if frames.shape[1:3] == (size, size):
        return frames
    resized = [np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.LANCZOS)) for f in frames]
    return np.stack(resized)  # [T, size, size, 3]


def _jsonable(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata with values JSON cannot hold replaced by their string form."""
    out = {}
    for key, value in metadata.items():
        try:
            json.dumps(value)
            out[str(key)] = value
        except TypeError:
            out[str(key)] = str(value)
    return out


def lerobot_features(episode: Episode, cameras: Sequence[str], resize: int | None) -> dict[str, dict[str, Any]]:
    """The LeRobot feature spec of a dataset whose first episode is `episode`."""
    features: dict[str, dict[str, Any]] = {}
    for camera in cameras:
        height, width, _ = episode.frames(camera)[0].shape
        shape = [resize, resize, 3] if resize else [height, width, 3]
        features[CAMERA_PREFIX + camera] = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
    if episode.state is not None:
        features["observation.state"] = {"dtype": "float32", "shape": [episode.state.shape[1]], "names": None}
    features["action"] = {"dtype": "float32", "shape": [episode.actions.shape[1]], "names": None}
    return features


def convert_to_lerobot(
    source: EpisodeDataset,
    output: str | Path,
    cameras: Sequence[str] | None = None,
    resize: int | None = None,
    encoding: VideoEncoding | None = None,
    robot_type: str = "unknown",
    resume: bool = False,
    progress: bool = True,
) -> LeRobotDataset:
    """Writes every episode of `source` into a LeRobotDataset v3.0 at `output` and returns it opened.

    Args:
        source: the dataset to convert (any `EpisodeDataset`).
        output: the new dataset directory.
        cameras: cameras to keep (default all).
        resize: resize frames to `resize x resize` (e.g. 224, as OpenVLA trains); None keeps the size.
        encoding: video codec settings (LeRobot's AV1 defaults when None).
        robot_type: robot name stored in info.json.
        resume: continue an interrupted conversion into `output`.
        progress: show progress bars.
    """
    from tqdm import tqdm

    if source.num_episodes == 0:
        raise DataError(f"dataset {source.name!r} has no episodes to convert")
    first = source.episode(0)
    cameras = list(cameras) if cameras is not None else list(first.cameras)
    fps = int(source.fps) if float(source.fps).is_integer() else source.fps
    writer = LeRobotWriter(output, fps, lerobot_features(first, cameras, resize), robot_type, resume, encoding)
    done = writer.num_episodes
    episodes = itertools.islice(iter(source), done, None)  # sequential reading is the fast path (RLDS)
    bar = tqdm(episodes, total=source.num_episodes - done, desc=f"converting {source.name}", disable=not progress)
    for episode in bar:
        episode.validate()
        frames: dict[str, np.ndarray] = {}
        for camera in cameras:
            video = episode.frames(camera).read()  # [T, H, W, 3]
            frames[CAMERA_PREFIX + camera] = resize_frames(video, resize) if resize else video
        if episode.state is not None:
            frames["observation.state"] = episode.state
        frames["action"] = episode.actions
        metadata = _jsonable({"source": source.name, "source_index": episode.index, **episode.metadata})
        try:
            writer.add_episode(frames, episode.task, metadata)
        except DataError as err:
            raise DataError(f"{episode.where}: {err}") from err
    writer.finalize(progress=progress)
    return LeRobotDataset(output, name=source.name)
