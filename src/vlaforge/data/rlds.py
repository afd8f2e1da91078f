"""RLDS / TFDS datasets (Open X-Embodiment) read into `Episode`s, standardized as OpenVLA does.

Needs the optional extra `vlaforge[rlds]` (tensorflow-cpu + tensorflow-datasets); this module imports no
torch, so it also runs in the separate venv `make test-rlds` builds. A dataset is a TFDS directory
(`<data_dir>/<name>/<version>/` holding `dataset_info.json` and TFRecord shards) or a name under `data_dir`.
Each episode's steps are stacked into arrays, then the dataset's `OXEConfig` picks the primary (and wrist)
camera, the state keys and the action / gripper standardization (see `vlaforge.data.oxe`).

    ds = RLDSDataset("path/to/bridge_orig/1.0.0")       # the config is found by the dataset's name
    for episode in ds:                                   # sequential reading is the fast path
        episode.actions                                  # [T, 7], gripper 1 = open
        episode.frames("primary").read()                 # [T, H, W, 3] uint8
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.episode import ArrayFrames, DataError, Episode, EpisodeDataset
from vlaforge.data.oxe import OXE_CONFIGS, OXEConfig, oxe_config, standardize


def import_tfds() -> Any:
    """`tensorflow_datasets`, or an ImportError saying how to install it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "reading RLDS needs tensorflow-datasets: pip install 'vlaforge[rlds]' (or run `make test-rlds`, "
            "which builds a separate venv for it)"
        ) from err
    return tfds


def _stack(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """A list of nested step dicts -> one nested dict of arrays with a leading time axis."""
    out: dict[str, Any] = {}
    for key, first in steps[0].items():
        if isinstance(first, dict):
            out[key] = _stack([step[key] for step in steps])
        else:
            out[key] = np.stack([np.asarray(step[key]) for step in steps])  # [T, ...]
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray | np.generic):
        return _plain(value.tolist()) if value.dtype.kind in "SO" else value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class RLDSDataset(EpisodeDataset):
    """An RLDS dataset as an `EpisodeDataset`, standardized with its `OXEConfig`.

    Args:
        path_or_name: a TFDS dataset directory (holding `dataset_info.json`), or a dataset name under `data_dir`.
        data_dir: TFDS data directory when a name is given.
        split: TFDS split (`train`, `train[:95%]`, ...).
        name: dataset name for statistics and errors; defaults to the TFDS name (which selects the config).
        config: standardization; None = the registered one for the dataset's name.
        task: instruction for every episode, overriding the dataset's (for datasets without language).
    """

    def __init__(
        self,
        path_or_name: str | Path,
        data_dir: str | Path | None = None,
        split: str = "train",
        name: str | None = None,
        config: OXEConfig | None = None,
        task: str | None = None,
    ) -> None:
        tfds = import_tfds()
        path = Path(path_or_name)
        try:
            if path.is_dir():
                self.builder = tfds.builder_from_directory(str(path))
            else:
                self.builder = tfds.builder(str(path_or_name), data_dir=None if data_dir is None else str(data_dir))
        except Exception as err:  # tfds raises many types for a missing or broken dataset
            raise DataError(f"RLDS dataset {path_or_name} cannot be opened: {type(err).__name__}: {err}") from err
        self.source = str(path_or_name)
        self.name = name or self.builder.name
        if config is None and self.name not in OXE_CONFIGS and self.builder.name in OXE_CONFIGS:
            config = OXE_CONFIGS[self.builder.name]
        self.config = config or oxe_config(self.name)
        self.fps = self.config.fps
        self.split, self.task = split, task
        try:
            self._num_episodes = int(self.builder.info.splits[split].num_examples)
        except (KeyError, ValueError) as err:
            raise DataError(f"RLDS dataset {self.source} has no split {split!r}: {err}") from err
        self._lengths: list[int] | None = None

    @property
    def num_episodes(self) -> int:
        return self._num_episodes

    def _examples(self, split: str) -> Iterator[dict[str, Any]]:
        tfds = import_tfds()
        return iter(tfds.as_numpy(self.builder.as_dataset(split=split, shuffle_files=False)))

    def episode_lengths(self) -> list[int]:
        """Lengths after standardization (one pass over the dataset the first time)."""
        if self._lengths is None:
            self._lengths = [episode.length for episode in self]
        return list(self._lengths)

    def episode(self, index: int) -> Episode:
        """Episode `index` (reads that one episode through a TFDS split slice; iterate for speed)."""
        self._check_index(index)
        example = next(self._examples(f"{self.split}[{index}:{index + 1}]"))
        return self._to_episode(index, example)

    def __iter__(self) -> Iterator[Episode]:
        for index, example in enumerate(self._examples(self.split)):
            yield self._to_episode(index, example)

    def _to_episode(self, index: int, example: dict[str, Any]) -> Episode:
        where = f"dataset {self.name!r}, episode {index} ({self.source})"
        steps = list(example["steps"])
        if not steps:
            raise DataError(f"{where}: the episode has no steps")
        trajectory = _stack(steps)
        if "observation" not in trajectory or "action" not in trajectory:
            raise DataError(f"{where}: RLDS steps need 'observation' and 'action', found {sorted(trajectory)}")
        trajectory = standardize(trajectory, self.config, where)
        observation = trajectory["observation"]
        cameras = {}
        for camera, key in (("primary", self.config.image_key), ("wrist", self.config.wrist_key)):
            if key is None:
                continue
            if key not in observation:
                raise DataError(f"{where}: no image {key!r} in the observation (found {sorted(observation)})")
            cameras[camera] = ArrayFrames(observation[key], f"{where}, camera {camera!r}")
        state = None
        if self.config.state_keys:
            missing = [k for k in self.config.state_keys if k not in observation]
            if missing:
                raise DataError(f"{where}: state keys {missing} are not in the observation ({sorted(observation)})")
            parts = [np.asarray(observation[k], dtype=np.float32).reshape(len(trajectory["action"]), -1)
                     for k in self.config.state_keys]  # fmt: skip
            state = np.concatenate(parts, axis=1)  # [T, S]
        task = self.task or self._instruction(trajectory, where)
        metadata = _plain(example.get("episode_metadata", {}))
        return Episode(self.name, index, task, trajectory["action"], state, cameras, {}, metadata, self.source)

    @staticmethod
    def _instruction(trajectory: dict[str, Any], where: str) -> str:
        language = trajectory.get("language_instruction")
        if language is None or len(language) == 0 or not _text(language[0]).strip():
            raise DataError(f"{where}: the episode has no language instruction; pass task='...' to set one")
        return _text(language[0])
