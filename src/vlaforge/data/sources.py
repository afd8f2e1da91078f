"""Open any supported dataset by path: LeRobotDataset v3 directory, HDF5 file(s), or RLDS/TFDS directory.

ds = open_dataset("demos/")                      # format detected from the files
ds = open_dataset("libero_spatial/", format="hdf5", flip_images=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlaforge.data.episode import DataError, EpisodeDataset

FORMATS = ("lerobot", "hdf5", "rlds")


def detect_format(path: str | Path) -> str:
    """`lerobot`, `hdf5` or `rlds`, from what the path holds; anything else raises a DataError saying why."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist")
    if path.is_file():
        if path.suffix in (".hdf5", ".h5"):
            return "hdf5"
        raise DataError(f"{path} is a file but not .hdf5/.h5; pass a LeRobot or RLDS dataset directory instead")
    if (path / "meta" / "info.json").is_file():
        return "lerobot"
    if (path / "dataset_info.json").is_file():
        return "rlds"
    if any(path.glob("*.hdf5")) or any(path.glob("*.h5")):
        return "hdf5"
    raise DataError(
        f"cannot tell the format of {path}: no meta/info.json (LeRobot), dataset_info.json (RLDS/TFDS, give the "
        "version directory) or .hdf5 files; pass format=... explicitly"
    )


def open_dataset(path: str | Path, format: str = "auto", name: str | None = None, **options: Any) -> EpisodeDataset:
    """The dataset at `path` as an `EpisodeDataset`.

    Args:
        path: dataset directory or file.
        format: `auto`, `lerobot`, `hdf5` or `rlds`.
        name: dataset name (keys the statistics); defaults to the directory or file name (RLDS: the TFDS name).
        options: reader options (`LeRobotDataset`: action_key, state_key; `HDF5Dataset`: task, cameras,
            state_keys, flip_images, fps; `RLDSDataset`: split, task, config).
    """
    kind = detect_format(path) if format == "auto" else format
    if kind == "lerobot":
        from vlaforge.data.lerobot import LeRobotDataset

        return LeRobotDataset(path, name=name, **options)
    if kind == "hdf5":
        from vlaforge.data.hdf5 import HDF5Dataset

        return HDF5Dataset(path, name=name, **options)
    if kind == "rlds":
        from vlaforge.data.rlds import RLDSDataset

        return RLDSDataset(path, name=name, **options)
    raise DataError(f"unknown dataset format {kind!r}; choose one of auto, {', '.join(FORMATS)}")
