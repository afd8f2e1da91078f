"""HDF5 demonstrations in the robomimic / LIBERO layout, read into `Episode`s.

    file.hdf5
    └── data                         attrs: env_args (robomimic), problem_info JSON with
        │                                   "language_instruction" (LIBERO)
        ├── demo_0                   attrs: num_samples
        │   ├── actions              [T, A] float
        │   ├── states               [T, S] float (the simulator state; choose other keys with `state_keys`)
        │   └── obs
        │       ├── agentview_rgb    [T, H, W, 3] uint8 (robomimic: agentview_image)
        │       ├── eye_in_hand_rgb  [T, H, W, 3] uint8
        │       └── ee_pos, gripper_states, joint_states, ...
        └── demo_1 ...

The instruction comes from a given `task`, else from the demo's or the file's attributes
(`language_instruction`, or `problem_info["language_instruction"]` as LIBERO writes it); a file without one
and no `task` is an error. Frames stay in the file and are read per step. LIBERO renders its images upside
down; `flip_images=True` turns them (as OpenVLA's LIBERO conversion does). HDF5 stores no frame rate;
robomimic and LIBERO record at 20 Hz, the default `fps`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vlaforge.data.episode import ArrayFrames, DataError, Episode, EpisodeDataset, abandon_after_fork


class FlippedFrames(ArrayFrames):
    """Frames turned by 180 degrees on read (LIBERO's raw images are upside down)."""

    def __getitem__(self, t: int) -> np.ndarray:
        return super().__getitem__(t)[::-1, ::-1]

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return super().read(start, stop)[:, ::-1, ::-1]


def _demo_sort_key(name: str) -> tuple[int, str]:
    match = re.search(r"(\d+)$", name)
    return (int(match.group(1)) if match else -1, name)


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a JSON-ready value."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def _attr_instruction(attrs: Any) -> str | None:
    """The instruction stored in HDF5 attributes, if any."""
    for key in ("language_instruction", "instruction", "task"):
        if key in attrs:
            value = attrs[key]
            return value.decode() if isinstance(value, bytes) else str(value)
    if "problem_info" in attrs:
        raw = attrs["problem_info"]
        info = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        if "language_instruction" in info:
            instruction = info["language_instruction"]
            return " ".join(instruction) if isinstance(instruction, list) else str(instruction)
    return None


class HDF5Dataset(EpisodeDataset):
    """robomimic / LIBERO HDF5 file(s) as an `EpisodeDataset`.

    Args:
        paths: one `.hdf5` file, several, or a directory (all `*.hdf5` / `*.h5` files in it, sorted).
        name: dataset name for statistics and errors; defaults to the file or directory name.
        task: instruction for every episode; None = read it from the files' attributes.
        cameras: `obs/` keys to read as cameras; None = every `[T, H, W, 3]` uint8 array in `obs/`.
        state_keys: datasets (relative to the demo) concatenated into the state; `()` for none.
        action_key: dataset holding the actions.
        flip_images: turn frames by 180 degrees (LIBERO).
        fps: recording frequency (HDF5 does not store it).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        name: str | None = None,
        task: str | None = None,
        cameras: Sequence[str] | None = None,
        state_keys: Sequence[str] = ("states",),
        action_key: str = "actions",
        flip_images: bool = False,
        fps: float = 20.0,
    ) -> None:
        self.files = self._resolve(paths)
        first = Path(paths) if isinstance(paths, str | Path) else self.files[0]
        self.name = name or first.stem
        self.task, self.cameras, self.state_keys = task, cameras, tuple(state_keys)
        self.action_key, self.flip_images, self.fps = action_key, flip_images, fps
        self._handles: dict[Path, h5py.File] = {}
        self._pid = os.getpid()
        self._index: list[tuple[Path, str, int]] = []  # (file, demo, length)
        for path in self.files:
            handle = self._file(path)
            if "data" not in handle:
                raise DataError(f"{path} has no 'data' group; expected the robomimic/LIBERO layout data/demo_N/...")
            for demo in sorted(handle["data"].keys(), key=_demo_sort_key):
                group = handle["data"][demo]
                if self.action_key not in group:
                    raise DataError(f"{path}, episode {demo}: no '{self.action_key}' dataset (found {list(group)})")
                self._index.append((path, demo, int(group[self.action_key].shape[0])))

    @staticmethod
    def _resolve(paths: str | Path | Sequence[str | Path]) -> list[Path]:
        if isinstance(paths, str | Path):
            path = Path(paths)
            files = sorted([*path.glob("*.hdf5"), *path.glob("*.h5")]) if path.is_dir() else [path]
        else:
            files = [Path(p) for p in paths]
        if not files:
            raise DataError(f"no .hdf5 files in {paths}")
        for path in files:
            if not path.is_file():
                raise DataError(f"HDF5 file {path} does not exist")
        return files

    def _file(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():  # forked worker: open its own handles, leave the parent's alone
            abandon_after_fork(self._handles)
            self._handles, self._pid = {}, os.getpid()
        if path not in self._handles:
            try:
                self._handles[path] = h5py.File(path, "r")
            except OSError as err:
                raise DataError(f"HDF5 file {path} cannot be opened (corrupt or truncated?): {err}") from err
        return self._handles[path]

    @property
    def num_episodes(self) -> int:
        return len(self._index)

    def episode_lengths(self) -> list[int]:
        return [length for _, _, length in self._index]

    def _instruction(self, path: Path, demo: h5py.Group, where: str) -> str:
        if self.task is not None:
            return self.task
        instruction = _attr_instruction(demo.attrs) or _attr_instruction(self._file(path)["data"].attrs)
        if instruction is None:
            instruction = _attr_instruction(self._file(path).attrs)
        if not instruction:
            raise DataError(
                f"{where}: no language instruction in the file's attributes (looked for language_instruction and "
                "problem_info); pass task='...' to say what the robot does"
            )
        return instruction

    def _array(self, group: h5py.Group, key: str, where: str, length: int) -> np.ndarray:
        if key not in group:
            raise DataError(f"{where}: missing dataset {key!r} (found {list(group)})")
        values = np.asarray(group[key])
        if values.shape[0] != length:
            raise DataError(
                f"{where}, feature {key!r}: {values.shape[0]} steps but '{self.action_key}' has {length} "
                "(mismatched episode lengths)"
            )
        return values

    def episode(self, index: int) -> Episode:
        path, demo_name, length = self._index[self._check_index(index)]
        where = f"dataset {self.name!r}, episode {index} ({path.name}:data/{demo_name})"
        demo = self._file(path)["data"][demo_name]
        actions = self._array(demo, self.action_key, where, length).astype(np.float32).reshape(length, -1)
        state = None
        if self.state_keys:
            parts = [self._array(demo, key, where, length).reshape(length, -1) for key in self.state_keys]
            state = np.concatenate(parts, axis=1).astype(np.float32)  # [T, sum of state dims]
        obs = demo.get("obs", {})
        names = self.cameras
        if names is None:
            names = [k for k in obs if obs[k].ndim == 4 and obs[k].shape[-1] == 3 and obs[k].dtype == np.uint8]
        frame_type = FlippedFrames if self.flip_images else ArrayFrames
        cameras = {}
        for camera in names:
            if camera not in obs:
                raise DataError(f"{where}: no camera 'obs/{camera}' (found {list(obs)})")
            if obs[camera].shape[0] != length:
                raise DataError(f"{where}, camera {camera!r}: {obs[camera].shape[0]} frames but {length} actions "
                                "(mismatched episode lengths)")  # fmt: skip
            cameras[camera] = frame_type(obs[camera], f"{where}, camera {camera!r}")
        task = self._instruction(path, demo, where)
        metadata = {key: _plain(value) for key, value in demo.attrs.items()}
        return Episode(self.name, index, task, actions, state, cameras, {}, metadata, f"{path}:data/{demo_name}")

    def close(self) -> None:
        """Closes the HDF5 files."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
