"""The common episode interface every dataset format is read into.

An `Episode` is one demonstration: `T` steps of actions `[T, A]`, optional proprioceptive state `[T, S]`, one
frame sequence per camera (`[H, W, 3]` uint8 per step, decoded only when asked for) and a task string.
LeRobotDataset v3, HDF5 (robomimic/LIBERO) and RLDS readers all subclass `EpisodeDataset`, so statistics,
conversion, inspection and training batches are written once against this interface:

    ds = LeRobotDataset(path)              # or HDF5Dataset(path), RLDSDataset(name, data_dir)
    for episode in ds:                     # or ds.episode(i)
        episode.actions                    # [T, A] float32
        episode.frames("corner")[t]        # [H, W, 3] uint8, decoded on demand
        episode.frames("corner").read()    # [T, H, W, 3] uint8, decoded in one pass

Camera names are short (`corner`, not `observation.images.corner`); LeRobot readers accept both.
Errors are `DataError`s that name the dataset, the file, the episode and the feature.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class DataError(ValueError):
    """A dataset is malformed or does not match its metadata; the message names file, episode and feature."""


class FrameSequence(Protocol):
    """The frames of one camera in one episode, decoded on demand."""

    def __len__(self) -> int:
        """Number of frames (the episode length)."""

    def __getitem__(self, t: int) -> np.ndarray:
        """Frame `t` as `[H, W, 3]` uint8."""

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames `start..stop-1` as `[N, H, W, 3]` uint8, decoded in one pass."""


class ArrayFrames:
    """Frames held in an array-like `[T, H, W, 3]` (numpy array, h5py dataset, memory map)."""

    def __init__(self, array: Any, where: str = "") -> None:
        self.array = array
        self.where = where

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, t: int) -> np.ndarray:
        if not -len(self) <= t < len(self):
            raise IndexError(f"{self.where}: frame {t} is out of range (episode has {len(self)} frames)")
        return np.asarray(self.array[t], dtype=np.uint8)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.asarray(self.array[start : len(self) if stop is None else stop], dtype=np.uint8)


@dataclass
class Episode:
    """One demonstration in the format-independent form.

    Attributes:
        dataset: name of the dataset it belongs to (statistics and errors are keyed by it).
        index: episode index inside its dataset.
        task: the language instruction.
        actions: `[T, A]` float32 raw actions (not normalized).
        state: `[T, S]` float32 proprioceptive state, or None.
        cameras: camera name -> its frames (`[H, W, 3]` uint8 per step).
        extras: further per-step features, each with leading axis T.
        metadata: free-form per-episode metadata (e.g. the seed a simulator used).
        source: file(s) the episode was read from, for error messages.
    """

    dataset: str
    index: int
    task: str
    actions: np.ndarray
    state: np.ndarray | None = None
    cameras: dict[str, FrameSequence] = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def length(self) -> int:
        """Number of steps T."""
        return int(self.actions.shape[0])

    @property
    def where(self) -> str:
        """`dataset 'x', episode 3 (file)`: the prefix of every error about this episode."""
        suffix = f" ({self.source})" if self.source else ""
        return f"dataset {self.dataset!r}, episode {self.index}{suffix}"

    def frames(self, camera: str) -> FrameSequence:
        """The frames of `camera`; an unknown name raises a KeyError listing the available ones."""
        if camera in self.cameras:
            return self.cameras[camera]
        short = camera.removeprefix("observation.images.")
        if short in self.cameras:
            return self.cameras[short]
        raise KeyError(f"{self.where}: no camera {camera!r}; available: {', '.join(self.cameras) or '(none)'}")

    def validate(self) -> None:
        """Checks shapes, lengths and finiteness; raises DataError naming the episode and the feature."""
        if self.actions.ndim != 2:
            raise DataError(f"{self.where}, feature 'action': expected [T, A], got shape {list(self.actions.shape)}")
        if self.length == 0:
            raise DataError(f"{self.where}: the episode has no steps")
        check_finite(self.actions, f"{self.where}, feature 'action'")
        lengths = {"action": self.length}
        if self.state is not None:
            check_finite(self.state, f"{self.where}, feature 'state'")
            lengths["state"] = int(self.state.shape[0])
        lengths.update({f"camera {name}": len(frames) for name, frames in self.cameras.items()})
        lengths.update({name: int(np.shape(value)[0]) for name, value in self.extras.items()})
        if len(set(lengths.values())) != 1:
            raise DataError(f"{self.where}: features have different lengths: {lengths}")
        if not isinstance(self.task, str) or not self.task.strip():
            raise DataError(f"{self.where}: the task (language instruction) is empty")


# Objects a forked process inherited from its parent (open video decoders, HDF5 handles). They are kept
# referenced and never freed in the child: freeing them there joins the parent's decoder threads, which do not
# exist after fork, and hangs the DataLoader worker.
_INHERITED_AFTER_FORK: list[object] = []


def abandon_after_fork(resource: object) -> None:
    """Keeps `resource` (inherited from the parent process) alive and unused for the life of this process."""
    _INHERITED_AFTER_FORK.append(resource)


def check_finite(values: np.ndarray, where: str) -> None:
    """Raises DataError when `values` holds NaN or inf, with the first offending (step, dim) indices."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[:3].tolist()
        raise DataError(f"{where}: NaN or inf at (step, dim) {bad}; fix or drop these steps before training")


class EpisodeDataset(ABC):
    """A dataset of episodes in any format. Subclasses implement `episode` and the counters.

    Attributes:
        name: dataset name; statistics in `dataset_statistics.json` are keyed by it (`unnorm_key`).
        fps: recording frequency in steps per second.
    """

    name: str
    fps: float

    @property
    @abstractmethod
    def num_episodes(self) -> int:
        """Number of episodes."""

    @abstractmethod
    def episode_lengths(self) -> list[int]:
        """Length of every episode, without reading frames."""

    @abstractmethod
    def episode(self, index: int) -> Episode:
        """Episode `index` (frames are decoded lazily)."""

    @property
    def camera_names(self) -> list[str]:
        """Short camera names, in the dataset's order."""
        return list(self.episode(0).cameras) if self.num_episodes else []

    @property
    def num_frames(self) -> int:
        """Total number of steps over all episodes."""
        return int(sum(self.episode_lengths()))

    @property
    def stats(self) -> dict[str, Any] | None:
        """Statistics stored with the dataset (feature -> {mean, std, min, max, q01, q99, ...}), if any."""
        return None

    def __len__(self) -> int:
        return self.num_episodes

    def __iter__(self) -> Iterator[Episode]:
        for index in range(self.num_episodes):
            yield self.episode(index)

    def _check_index(self, index: int) -> int:
        if not 0 <= index < self.num_episodes:
            raise IndexError(f"dataset {self.name!r} has {self.num_episodes} episodes; there is no episode {index}")
        return index
