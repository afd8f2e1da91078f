"""LeRobotDataset v3.0, read and written directly with pyarrow + PyAV (no dependency on the lerobot package).

Layout (the published v3.0 format; many episodes per file, located through `meta/episodes`):

    meta/info.json                                   schema: features, shapes, dtypes, fps, path templates
    meta/stats.json                                  per feature: min, max, mean, std, count, q01..q99
    meta/tasks.parquet                               task string (pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: length, tasks, file indices,
                                                     row range, video time range, per-episode stats
    data/chunk-000/file-000.parquet                  one row per step: action, observation.state, timestamp,
                                                     frame_index, episode_index, index, task_index
    videos/<camera key>/chunk-000/file-000.mp4       the frames of many episodes, back to back

Writing (`LeRobotWriter`) is crash-safe: every `add_episode` writes the episode into files of its own and
commits it by writing its `meta/episodes` row last, so the directory is a valid v3.0 dataset after every
episode and `resume=True` continues after the last committed one. `finalize` then packs the episodes into
large files (parquet tables concatenated, MP4 packets copied without re-encoding), computes `stats.json`
and validates the result. Reading (`LeRobotDataset`) decodes frames on demand with seeking; only the
parquet files of the episodes being read are held in memory (a small LRU cache), never the videos.

    writer = LeRobotWriter(root, fps=20, features={
        "observation.images.corner": {"dtype": "video", "shape": [224, 224, 3], "names": ["height", "width", "rgb"]},
        "observation.state": {"dtype": "float32", "shape": [4], "names": None},
        "action": {"dtype": "float32", "shape": [4], "names": None}})
    writer.add_episode({"observation.images.corner": frames, "observation.state": s, "action": a}, task="push")
    writer.finalize()
    ds = LeRobotDataset(root); ds.episode(0).frames("corner")[5]   # [224, 224, 3] uint8
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from vlaforge.data.episode import DataError, Episode, EpisodeDataset, abandon_after_fork, check_finite
from vlaforge.data.stats import RunningStats, aggregate_stats, feature_stats, image_stats, to_jsonable
from vlaforge.data.video import VideoEncoding, VideoError, VideoReader, check_frames, encode_video, open_video

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
ACTION_KEY, STATE_KEY, CAMERA_PREFIX = "action", "observation.state", "observation.images."
METADATA_COLUMN = "vlaforge_metadata"  # extra column of meta/episodes: the metadata dict given per episode
PACK_DIR, OLD_DIR = ".vlaforge-pack", ".vlaforge-old"  # scratch directories of `finalize`

# Columns LeRobot adds to every dataset; the writer fills them in.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
_ARROW_TYPES = {
    "float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
    "int16": pa.int16(), "int8": pa.int8(), "uint8": pa.uint8(), "bool": pa.bool_(),
}  # fmt: skip
_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # HF datasets' Image feature


# ------------------------------------------------------------------------------------------ file helpers
def _slot(number: int, chunks_size: int) -> dict[str, int]:
    """Flat file number -> {chunk_index, file_index} (chunks hold `chunks_size` files)."""
    return {"chunk_index": number // chunks_size, "file_index": number % chunks_size}


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _atomic_write_json(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _read_table(path: Path, what: str, columns: list[str] | None = None) -> pa.Table:
    """Reads a parquet file; a missing or corrupt file raises DataError naming it and `what` needed it."""
    if not path.is_file():
        raise DataError(f"{what}: parquet file {path} does not exist")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{what}: parquet file {path} cannot be read (corrupt or truncated?): {err}") from err


def _is_numeric(feature: dict[str, Any]) -> bool:
    return feature["dtype"] in _ARROW_TYPES


def _width(feature: dict[str, Any]) -> int:
    """Number of values per step of a numeric feature (1 for a scalar)."""
    return int(np.prod(feature["shape"])) if feature["shape"] else 1


def _to_arrow(values: np.ndarray, feature: dict[str, Any]) -> pa.Array:
    """`[T]` or `[T, D]` values -> a scalar column, or a fixed-size list column of width D."""
    arrow_type = _ARROW_TYPES[feature["dtype"]]
    flat = np.ascontiguousarray(values, dtype=np.dtype(feature["dtype"])).reshape(values.shape[0], -1)  # [T, D]
    if list(feature["shape"]) == [1]:
        return pa.array(flat[:, 0], type=arrow_type)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=arrow_type), flat.shape[1])


def _to_numpy(column: pa.ChunkedArray | pa.Array, feature: dict[str, Any], where: str) -> np.ndarray:
    """A numeric column -> `[T]` (scalar feature) or `[T, D]`, checked against the feature's shape."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    dtype = np.dtype(feature["dtype"])
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) or pa.types.is_large_list(array.type):
        values = array.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        width = _width(feature)
        if values.size != len(array) * width:
            raise DataError(f"{where}: expected {width} values per step ({feature['shape']}), got {values.size}")
        return values.reshape(len(array), *feature["shape"])  # [T, ...]
    return array.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _tasks_table(tasks: dict[str, int]) -> pa.Table:
    """meta/tasks.parquet as pandas writes a DataFrame indexed by "task" (so `pd.read_parquet` restores it)."""
    names = sorted(tasks, key=tasks.get)
    table = pa.table({"task_index": pa.array([tasks[n] for n in names], pa.int64()), "task": pa.array(names)})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _read_tasks(root: Path) -> dict[str, int]:
    table = _read_table(root / TASKS_PATH, f"dataset {root}", None)
    column = "task" if "task" in table.column_names else "__index_level_0__"
    if column not in table.column_names or "task_index" not in table.column_names:
        raise DataError(f"{root / TASKS_PATH}: expected columns 'task' and 'task_index', got {table.column_names}")
    return dict(zip(table[column].to_pylist(), table["task_index"].to_pylist()))


def _read_episode_rows(root: Path) -> list[dict[str, Any]]:
    """All rows of meta/episodes/*/*.parquet without the per-episode stats, sorted by episode_index."""
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    rows: list[dict[str, Any]] = []
    for path in files:
        schema = pq.read_schema(path) if path.is_file() else None
        columns = [n for n in schema.names if not n.startswith("stats/")] if schema else None
        rows += _read_table(path, f"dataset {root}", columns).to_pylist()
    rows.sort(key=lambda r: r["episode_index"])
    for expected, row in enumerate(rows):
        if row["episode_index"] != expected:
            raise DataError(
                f"{root / 'meta' / 'episodes'}: episode indices are not 0..N-1 (found {row['episode_index']} "
                f"where {expected} was expected); an episode's metadata is missing or duplicated"
            )
    return rows


def _load_info(root: Path) -> dict[str, Any]:
    path = root / INFO_PATH
    if not path.is_file():
        raise DataError(f"{root} is not a LeRobot dataset: {INFO_PATH} is missing")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    version = str(info.get("codebase_version", "?"))
    if not version.startswith("v3"):
        raise DataError(
            f"{root} is a LeRobotDataset {version}; vlaforge reads v3.0. Convert it with lerobot's "
            "`python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`"
        )
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise DataError(f"{path} has no {key!r}")
    return info


# ------------------------------------------------------------------------------------------------- reading
class _ReaderPool:
    """A few open `VideoReader`s (LRU). A forked DataLoader worker starts with an empty pool of its own."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._readers: OrderedDict[Path, VideoReader] = OrderedDict()
        self._pid = os.getpid()

    def get(self, path: Path, fps: float) -> VideoReader:
        if self._pid != os.getpid():  # inherited from the parent process: never use (or free) its decoders
            abandon_after_fork(self._readers)
            self._readers, self._pid = OrderedDict(), os.getpid()
        if path in self._readers:
            self._readers.move_to_end(path)
            return self._readers[path]
        if len(self._readers) >= self.size:
            self._readers.popitem(last=False)[1].close()
        self._readers[path] = reader = VideoReader(path, fps)
        return reader

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


class VideoFrames:
    """The frames of one camera in one episode: a time range of a (shared) MP4, decoded on demand."""

    def __init__(self, pool: _ReaderPool, path: Path, start_s: float, length: int, fps: float, where: str) -> None:
        self.pool, self.path, self.start_s, self.length, self.fps, self.where = pool, path, start_s, length, fps, where

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, t: int) -> np.ndarray:
        t = t + self.length if t < 0 else t
        if not 0 <= t < self.length:
            raise IndexError(f"{self.where}: frame {t} is out of range (episode has {self.length} frames)")
        return self.read(t, t + 1)[0]

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.length if stop is None else stop
        if not 0 <= start <= stop <= self.length:
            raise IndexError(f"{self.where}: frames {start}..{stop} are out of range (length {self.length})")
        if start == stop:
            return np.zeros((0, 0, 0, 3), dtype=np.uint8)
        try:
            return self.pool.get(self.path, self.fps).read(self.start_s + start / self.fps, stop - start)
        except VideoError as err:
            raise VideoError(f"{self.where}: {err}") from err


class PngFrames:
    """Frames stored as PNG bytes in a parquet column (LeRobot's `image` dtype), decoded on demand."""

    def __init__(self, blobs: list[bytes], where: str) -> None:
        self.blobs, self.where = blobs, where

    def __len__(self) -> int:
        return len(self.blobs)

    def __getitem__(self, t: int) -> np.ndarray:
        try:
            return np.asarray(Image.open(io.BytesIO(self.blobs[t])).convert("RGB"))
        except (OSError, ValueError) as err:
            raise DataError(f"{self.where}: frame {t} is not a readable image: {err}") from err

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        return np.stack([self[t] for t in range(start, len(self) if stop is None else stop)])


class LeRobotDataset(EpisodeDataset):
    """Reads a LeRobotDataset v3.0 directory into `Episode`s.

    Args:
        root: the dataset directory (holding `meta/info.json`).
        name: dataset name for statistics and errors; defaults to the directory name.
        action_key: feature holding the actions.
        state_key: feature holding the proprioceptive state (ignored when the dataset has none).
        cache_files: number of data parquet files kept in memory.
    """

    def __init__(
        self,
        root: str | Path,
        name: str | None = None,
        action_key: str = ACTION_KEY,
        state_key: str = STATE_KEY,
        cache_files: int = 4,
    ) -> None:
        self.root = Path(root)
        self.info = _load_info(self.root)
        self.name = name or self.root.resolve().name
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        if action_key not in self.features:
            raise DataError(f"dataset {self.name!r} ({self.root}) has no feature {action_key!r}: {list(self.features)}")
        self.action_key = action_key
        self.state_key = state_key if state_key in self.features else None
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] == "image"]
        self.tasks = _read_tasks(self.root)
        self._task_names = {index: task for task, index in self.tasks.items()}
        self._rows = _read_episode_rows(self.root)
        declared = self.info.get("total_episodes", len(self._rows))
        if declared != len(self._rows):
            raise DataError(f"{self.root}: info.json says {declared} episodes but meta/episodes has {len(self._rows)}")
        self._cache_files = cache_files
        self._tables: OrderedDict[Path, tuple[pa.Table, dict[int, tuple[int, int]]]] = OrderedDict()
        self._pool = _ReaderPool()
        self._stats: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------ metadata
    @property
    def num_episodes(self) -> int:
        return len(self._rows)

    def episode_lengths(self) -> list[int]:
        return [int(row["length"]) for row in self._rows]

    @property
    def camera_names(self) -> list[str]:
        return [k.removeprefix(CAMERA_PREFIX) for k in self.video_keys + self.image_keys]

    @property
    def stats(self) -> dict[str, dict[str, np.ndarray]] | None:
        """`meta/stats.json` as numpy arrays, or None when the file is absent."""
        if self._stats is None and (self.root / STATS_PATH).is_file():
            raw = json.loads((self.root / STATS_PATH).read_text())
            self._stats = {f: {k: np.asarray(v) for k, v in s.items()} for f, s in raw.items()}
        return self._stats

    def episode_row(self, index: int) -> dict[str, Any]:
        """The `meta/episodes` row of an episode (file indices, row range, video time ranges, metadata)."""
        return self._rows[self._check_index(index)]

    def video_path(self, index: int, key: str) -> Path:
        """The MP4 holding camera `key` of episode `index`."""
        row = self.episode_row(index)
        template = self.info.get("video_path") or VIDEO_PATH
        chunk, file = row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]
        return self.root / template.format(video_key=key, chunk_index=chunk, file_index=file)

    def data_path(self, index: int) -> Path:
        """The parquet file holding the steps of episode `index`."""
        row = self.episode_row(index)
        return self.root / self.info["data_path"].format(
            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
        )

    # ------------------------------------------------------------------------------ episodes
    def _table(self, path: Path, where: str) -> tuple[pa.Table, dict[int, tuple[int, int]]]:
        if path in self._tables:
            self._tables.move_to_end(path)
            return self._tables[path]
        table = _read_table(path, where)
        if "episode_index" not in table.column_names:
            raise DataError(f"{where}: {path} has no 'episode_index' column")
        episodes = table["episode_index"].to_numpy()
        starts = np.flatnonzero(np.r_[True, episodes[1:] != episodes[:-1]])  # first row of each run
        counts = np.diff(np.r_[starts, len(episodes)])
        slices = {int(episodes[s]): (int(s), int(c)) for s, c in zip(starts, counts)}
        if len(self._tables) >= self._cache_files:
            self._tables.popitem(last=False)
        self._tables[path] = (table, slices)
        return table, slices

    def _steps(self, index: int, where: str) -> pa.Table:
        """The parquet rows of one episode, checked against its declared length."""
        path = self.data_path(index)
        table, slices = self._table(path, where)
        length = int(self._rows[index]["length"])
        start, count = slices.get(index, (0, 0))
        if count != length:
            raise DataError(
                f"{where}: meta/episodes says the episode has {length} steps but {path.relative_to(self.root)} "
                f"holds {count} rows of it (mismatched episode length)"
            )
        steps = table.slice(start, count)
        if "frame_index" in steps.column_names:
            frame_index = steps["frame_index"].to_numpy()
            if not np.array_equal(frame_index, np.arange(length)):
                raise DataError(f"{where}: frame_index is not 0..{length - 1} (rows out of order or missing)")
        return steps

    def episode(self, index: int) -> Episode:
        row = self.episode_row(index)
        where = f"dataset {self.name!r}, episode {index}"
        steps = self._steps(index, where)
        columns = {}
        for key, feature in self.features.items():
            if _is_numeric(feature) and key not in DEFAULT_FEATURES:
                if key not in steps.column_names:
                    raise DataError(f"{where}: feature {key!r} is missing from {self.data_path(index)}")
                columns[key] = _to_numpy(steps[key], feature, f"{where}, feature {key!r}")
        actions = columns.pop(self.action_key).astype(np.float32).reshape(len(steps), -1)  # [T, A]
        state = columns.pop(self.state_key).astype(np.float32).reshape(len(steps), -1) if self.state_key else None
        tasks = list(row.get("tasks") or [])
        if not tasks and "task_index" in steps.column_names:
            tasks = [self._task_names.get(int(steps["task_index"][0].as_py()), "")]
        cameras: dict[str, Any] = {}
        for key in self.video_keys:
            start = float(row[f"videos/{key}/from_timestamp"])
            path = self.video_path(index, key)
            cameras[key.removeprefix(CAMERA_PREFIX)] = VideoFrames(
                self._pool, path, start, len(steps), self.fps, f"{where}, camera {key!r}"
            )
        for key in self.image_keys:
            blobs = [item["bytes"] for item in steps[key].to_pylist()]
            cameras[key.removeprefix(CAMERA_PREFIX)] = PngFrames(blobs, f"{where}, camera {key!r}")
        metadata = json.loads(row.get(METADATA_COLUMN) or "{}")
        source = str(self.data_path(index).relative_to(self.root))
        return Episode(self.name, index, tasks[0] if tasks else "", actions, state, cameras, columns, metadata, source)

    def validate(self, decode: bool = False, progress: bool = False) -> None:
        """Checks every episode against its metadata: row counts, frame indices, finiteness, video lengths.

        Args:
            decode: also decode every frame (slow; finds corruption inside the video streams).
            progress: show a progress bar.
        """
        from tqdm import tqdm

        frame_counts: dict[Path, int] = {}
        indices = range(self.num_episodes)
        for index in tqdm(indices, desc=f"validating {self.name}", disable=not progress, leave=False):
            episode = self.episode(index)
            episode.validate()
            for key in self.video_keys:
                path = self.video_path(index, key)
                if path not in frame_counts:
                    try:
                        with open_video(path) as container:
                            frame_counts[path] = int(container.streams.video[0].frames)
                    except VideoError as err:
                        raise VideoError(f"{episode.where}, camera {key!r}: {err}") from err
                end = round(float(self._rows[index][f"videos/{key}/to_timestamp"]) * self.fps)
                if frame_counts[path] and frame_counts[path] < end:
                    raise VideoError(
                        f"{episode.where}, camera {key!r}: {path} has {frame_counts[path]} frames but the episode "
                        f"ends at frame {end} (truncated video?)"
                    )
            if decode:
                for camera in episode.cameras.values():
                    camera.read()

    def close(self) -> None:
        """Closes open video files and drops cached tables."""
        self._pool.close()
        self._tables.clear()


# ------------------------------------------------------------------------------------------------- writing
def _check_features(features: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validates a LeRobot feature spec and returns a copy with the default columns added."""
    out: dict[str, dict[str, Any]] = {}
    for key, feature in features.items():
        if key in DEFAULT_FEATURES:
            continue  # filled in by the writer
        if "/" in key:
            raise DataError(f"feature name {key!r} contains '/', which LeRobot reserves for nested keys")
        if not isinstance(feature, dict) or "dtype" not in feature or "shape" not in feature:
            raise DataError(f"feature {key!r} needs a 'dtype' and a 'shape', got {feature!r}")
        dtype, shape = feature["dtype"], [int(s) for s in feature["shape"]]
        if dtype in ("video", "image"):
            hwc = shape if shape[-1] == 3 else shape[1:] + shape[:1]
            if len(shape) != 3 or hwc[2] != 3:
                raise DataError(f"feature {key!r}: camera shape must be [H, W, 3] (or [3, H, W]), got {shape}")
        elif dtype not in _ARROW_TYPES:
            supported = ", ".join(["video", "image", *_ARROW_TYPES])
            raise DataError(f"feature {key!r}: dtype {dtype!r} is not supported; use one of {supported}")
        elif len(shape) != 1:
            raise DataError(f"feature {key!r}: numeric features must be 1-D (shape [D]), got {shape}")
        out[key] = {**feature, "shape": shape, "names": feature.get("names")}
    return {**out, **{k: dict(v) for k, v in DEFAULT_FEATURES.items()}}


def _camera_hwc(feature: dict[str, Any]) -> tuple[int, int, int]:
    shape = feature["shape"]
    return tuple(shape) if shape[-1] == 3 else (shape[1], shape[2], shape[0])


def _groups(sizes: Sequence[float], limit: float) -> list[list[int]]:
    """Consecutive items packed greedily into groups whose total size stays within `limit` (at least 1 item)."""
    groups: list[list[int]] = [[]]
    total = 0.0
    for index, size in enumerate(sizes):
        if groups[-1] and total + size > limit:
            groups.append([])
            total = 0.0
        groups[-1].append(index)
        total += size
    return groups


def _finish_pack(root: Path) -> None:
    """Completes an interrupted `finalize` (swaps the packed files in) or discards an incomplete one."""
    pack = root / PACK_DIR
    if pack.is_dir() and (pack / "COMPLETE").is_file():
        old = root / OLD_DIR
        shutil.rmtree(old, ignore_errors=True)  # left by an earlier interrupted swap; the pack supersedes it
        for sub in ("data", "videos", "meta/episodes"):
            if (pack / sub).exists():
                if (root / sub).exists():
                    (old / sub).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(root / sub, old / sub)
                (root / sub).parent.mkdir(parents=True, exist_ok=True)
                os.replace(pack / sub, root / sub)
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(pack, ignore_errors=True)


class LeRobotWriter:
    """Writes episodes into a LeRobotDataset v3.0 directory, crash-safe and resumable.

    Args:
        root: dataset directory; must not hold a dataset unless `resume` is True.
        fps: recording frequency in frames per second.
        features: LeRobot feature spec, e.g. `{"action": {"dtype": "float32", "shape": [7], "names": None},
            "observation.images.corner": {"dtype": "video", "shape": [224, 224, 3], "names": [...]}}`.
            Cameras are `video` (MP4) or `image` (PNG in parquet); numeric features are 1-D.
        robot_type: robot name stored in info.json.
        resume: reopen a dataset whose earlier episodes were written and append after them.
        encoding: video codec settings (LeRobot's AV1 defaults when None).
        chunks_size: files per chunk directory.
        data_files_size_in_mb: size at which `finalize` starts a new data file.
        video_files_size_in_mb: size at which `finalize` starts a new video file.
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        features: dict[str, dict[str, Any]],
        robot_type: str = "unknown",
        resume: bool = False,
        encoding: VideoEncoding | None = None,
        chunks_size: int = 1000,
        data_files_size_in_mb: int = 100,
        video_files_size_in_mb: int = 200,
    ) -> None:
        self.root = Path(root)
        self.fps = fps
        self.features = _check_features(features)
        self.robot_type = robot_type
        self.encoding = encoding or VideoEncoding()
        self.chunks_size = chunks_size
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.image_keys = [k for k, f in self.features.items() if f["dtype"] == "image"]
        self._rows: list[dict[str, Any]] = []
        self._tasks: dict[str, int] = {}
        if (self.root / INFO_PATH).is_file():
            if not resume:
                raise DataError(f"{self.root} already holds a dataset; pass resume=True to append to it")
            self._resume()
        elif self.root.exists() and any(self.root.iterdir()):
            raise DataError(f"{self.root} exists and is not empty; choose a new directory for the dataset")
        else:
            self._write_info()
        self._next_slot = 1 + max((self._slots_of(row) for row in self._rows), default=-1)

    # ------------------------------------------------------------------------------ public API
    @property
    def num_episodes(self) -> int:
        """Episodes written so far, including those of a resumed dataset."""
        return len(self._rows)

    @property
    def num_frames(self) -> int:
        """Steps written so far."""
        return int(self._rows[-1]["dataset_to_index"]) if self._rows else 0

    def episode_metadata(self, index: int) -> dict[str, Any]:
        """The metadata dict given to `add_episode` for episode `index`."""
        if not 0 <= index < len(self._rows):
            raise IndexError(f"{self.root} has {len(self._rows)} episodes; there is no episode {index}")
        return json.loads(self._rows[index].get(METADATA_COLUMN) or "{}")

    def add_episode(self, frames: dict[str, np.ndarray], task: str, metadata: dict[str, Any] | None = None) -> int:
        """Writes one episode and commits it to disk; returns its episode index.

        Args:
            frames: feature key -> values with a leading time axis T (`[T, H, W, 3]` uint8 for cameras,
                `[T, D]` for numeric features). Every feature of the spec must be given.
            task: the language instruction of the episode.
            metadata: JSON-serializable dict kept with the episode (`episode_metadata(i)` returns it).
        """
        index = len(self._rows)
        length = self._check_episode(frames, task, index)
        try:
            metadata_json = json.dumps(metadata or {})
        except TypeError as err:
            raise DataError(f"episode {index}: metadata must be JSON-serializable: {err}") from err
        slot = _slot(self._next_slot, self.chunks_size)
        row = self._base_row(index, length, task, slot, metadata_json)
        _atomic_write_table(self._steps_table(frames, index, length, task), self.root / DATA_PATH.format(**slot))
        for key in self.video_keys:
            path = self.root / VIDEO_PATH.format(video_key=key, **slot)
            tmp = path.with_name(path.name + ".tmp.mp4")
            encode_video(tmp, frames[key], self.fps, self.encoding)
            os.replace(tmp, path)
            row.update({f"videos/{key}/from_timestamp": 0.0, f"videos/{key}/to_timestamp": length / self.fps})
        row.update(self._episode_stats(frames))
        if task not in self._tasks:
            self._tasks[task] = len(self._tasks)
            _atomic_write_table(_tasks_table(self._tasks), self.root / TASKS_PATH)
        _atomic_write_table(pa.Table.from_pylist([row]), self.root / EPISODES_PATH.format(**slot))  # the commit
        self._rows.append(row)
        self._next_slot += 1
        self._write_info()
        return index

    def finalize(self, pack: bool = True, progress: bool = True) -> None:
        """Packs episodes into large files, writes info.json and stats.json, and validates the dataset.

        Args:
            pack: join the per-episode files into files of up to `data_files_size_in_mb` /
                `video_files_size_in_mb` (packets are copied, not re-encoded).
            progress: show progress bars.
        """
        if not self._rows:
            raise DataError(f"{self.root}: no episodes were added; there is nothing to finalize")
        if pack:
            self._pack(progress)
        _atomic_write_json(to_jsonable(self._dataset_stats(progress)), self.root / STATS_PATH)
        self._write_info()
        LeRobotDataset(self.root).validate(progress=progress)

    # ------------------------------------------------------------------------------ episode writing
    def _check_episode(self, frames: dict[str, np.ndarray], task: str, index: int) -> int:
        """Validates one episode's arrays against the spec; returns its length T."""
        where = f"{self.root}, episode {index}"
        if not isinstance(task, str) or not task.strip():
            raise DataError(f"{where}: the task (language instruction) must be a non-empty string")
        wanted = [k for k in self.features if k not in DEFAULT_FEATURES]
        missing, unknown = sorted(set(wanted) - set(frames)), sorted(set(frames) - set(self.features))
        if missing or unknown:
            raise DataError(f"{where}: missing features {missing}, unknown features {unknown}; the spec has {wanted}")
        lengths = {key: int(np.shape(frames[key])[0]) if np.ndim(frames[key]) else 0 for key in wanted}
        if len(set(lengths.values())) != 1:
            raise DataError(f"{where}: features have different lengths (mismatched episode length): {lengths}")
        length = next(iter(lengths.values()))
        if length == 0:
            raise DataError(f"{where}: the episode has no steps")
        for key in wanted:
            feature, values = self.features[key], frames[key]
            if feature["dtype"] in ("video", "image"):
                check_frames(values, f"{where}, feature {key!r}")
                if tuple(values.shape[1:]) != _camera_hwc(feature):
                    got, spec = list(values.shape[1:]), list(_camera_hwc(feature))
                    raise DataError(f"{where}, feature {key!r}: frames are {got}, the spec says {spec}")
                continue
            values = np.asarray(values)
            if values.reshape(length, -1).shape[1] != _width(feature):
                raise DataError(f"{where}, feature {key!r}: got shape {list(values.shape)}, "
                                f"the spec says [T, {_width(feature)}]")  # fmt: skip
            check_finite(values, f"{where}, feature {key!r}")
        return length

    def _base_row(self, index: int, length: int, task: str, slot: dict[str, int], metadata: str) -> dict[str, Any]:
        start = self.num_frames
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [task],
            "length": length,
            "data/chunk_index": slot["chunk_index"],
            "data/file_index": slot["file_index"],
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for key in self.video_keys:
            row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"] = slot["chunk_index"], slot["file_index"]
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = slot["chunk_index"], slot["file_index"]
        row[METADATA_COLUMN] = metadata
        return row

    def _steps_table(self, frames: dict[str, np.ndarray], index: int, length: int, task: str) -> pa.Table:
        """The parquet rows of one episode: the numeric features, PNG images and LeRobot's default columns."""
        columns: dict[str, pa.Array] = {}
        for key, feature in self.features.items():
            if key in DEFAULT_FEATURES or feature["dtype"] == "video":
                continue
            if feature["dtype"] == "image":
                blobs = [{"bytes": _png(image), "path": None} for image in frames[key]]
                columns[key] = pa.array(blobs, type=_IMAGE_TYPE)
            else:
                columns[key] = _to_arrow(np.asarray(frames[key]).reshape(length, -1), feature)
        frame_index = np.arange(length, dtype=np.int64)
        task_index = self._tasks.get(task, len(self._tasks))
        columns["timestamp"] = pa.array((frame_index / self.fps).astype(np.float32))
        columns["frame_index"] = pa.array(frame_index)
        columns["episode_index"] = pa.array(np.full(length, index, dtype=np.int64))
        columns["index"] = pa.array(self.num_frames + frame_index)
        columns["task_index"] = pa.array(np.full(length, task_index, dtype=np.int64))
        return pa.table(columns)

    def _episode_stats(self, frames: dict[str, np.ndarray]) -> dict[str, Any]:
        """`stats/<feature>/<stat>` columns of the episode's meta row (LeRobot keeps them per episode)."""
        out: dict[str, Any] = {}
        for key, feature in self.features.items():
            if key in DEFAULT_FEATURES:
                continue
            values = np.asarray(frames[key])
            if feature["dtype"] in ("video", "image"):
                picks = np.linspace(0, len(values) - 1, min(len(values), 16)).round().astype(int)
                stats = image_stats(values[picks])
                stats["count"] = np.array([len(values)])
            else:
                stats = feature_stats(values.reshape(len(values), -1))
            out.update({f"stats/{key}/{name}": value.tolist() for name, value in stats.items()})
        return out

    def _write_info(self) -> None:
        features = {k: dict(v) for k, v in self.features.items()}
        for key in self.video_keys:
            height, width, _ = _camera_hwc(features[key])
            features[key]["info"] = self.encoding.info(self.fps, height, width)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._rows),
            "total_frames": self.num_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_files_size_in_mb,
            "video_files_size_in_mb": self.video_files_size_in_mb,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.video_keys else None,
            "features": features,
        }
        _atomic_write_json(info, self.root / INFO_PATH)

    # ------------------------------------------------------------------------------ resuming
    def _slots_of(self, row: dict[str, Any]) -> int:
        """Largest flat file number an episode row points at."""
        pairs = [("data/chunk_index", "data/file_index"), ("meta/episodes/chunk_index", "meta/episodes/file_index")]
        pairs += [(f"videos/{k}/chunk_index", f"videos/{k}/file_index") for k in self.video_keys]
        return max(int(row[c]) * self.chunks_size + int(row[f]) for c, f in pairs)

    def _resume(self) -> None:
        _finish_pack(self.root)
        info = _load_info(self.root)
        if float(info["fps"]) != float(self.fps):
            raise DataError(f"{self.root} was recorded at {info['fps']} fps, not {self.fps}; resume with the same fps")
        existing = {k: (f["dtype"], list(f["shape"])) for k, f in info["features"].items()}
        given = {k: (f["dtype"], list(f["shape"])) for k, f in self.features.items()}
        if existing != given:
            raise DataError(f"{self.root} has features {existing}; the writer was given {given}")
        self.chunks_size = int(info.get("chunks_size", self.chunks_size))
        self.robot_type = info.get("robot_type") or self.robot_type
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        rows = [r for path in files for r in _read_table(path, f"resuming {self.root}").to_pylist()]
        self._rows = sorted(rows, key=lambda r: r["episode_index"])
        if [r["episode_index"] for r in self._rows] != list(range(len(self._rows))):
            raise DataError(f"{self.root}: meta/episodes does not hold episodes 0..N-1; the dataset is damaged")
        self._tasks = _read_tasks(self.root) if (self.root / TASKS_PATH).is_file() else {}
        self._remove_orphans()
        self._write_info()

    def _referenced_files(self) -> set[Path]:
        refs: set[Path] = set()
        for row in self._rows:
            data = {"chunk_index": row["data/chunk_index"], "file_index": row["data/file_index"]}
            refs.add(self.root / DATA_PATH.format(**data))
            refs.add(self.root / EPISODES_PATH.format(
                chunk_index=row["meta/episodes/chunk_index"], file_index=row["meta/episodes/file_index"]))  # fmt: skip
            for key in self.video_keys:
                slot = {"chunk_index": row[f"videos/{key}/chunk_index"], "file_index": row[f"videos/{key}/file_index"]}
                refs.add(self.root / VIDEO_PATH.format(video_key=key, **slot))
        return refs

    def _remove_orphans(self) -> None:
        """Deletes files an interrupted `add_episode` left behind (LeRobot would read every parquet file)."""
        refs = self._referenced_files()
        for pattern in ("data/*/*", "meta/episodes/*/*", "videos/*/*/*"):
            for path in self.root.glob(pattern):
                if path.is_file() and path not in refs:
                    path.unlink()

    # ------------------------------------------------------------------------------ finalizing
    def _pack(self, progress: bool) -> None:
        """Rewrites data, videos and meta/episodes into few large files; swaps them in at the end."""
        from tqdm import tqdm

        reader = LeRobotDataset(self.root)
        pack = self.root / PACK_DIR
        shutil.rmtree(pack, ignore_errors=True)
        rows = [dict(row) for row in self._rows]
        steps = tqdm(total=1 + len(self.video_keys), desc="packing files", disable=not progress, leave=False)
        self._pack_data(reader, pack, rows)
        steps.update()
        for key in self.video_keys:
            self._pack_videos(reader, pack, rows, key)
            steps.update()
        steps.close()
        reader.close()
        for start in range(0, len(rows), 10_000):  # episode metadata: up to 10k rows per file
            slot = _slot(start // 10_000, self.chunks_size)
            for row in rows[start : start + 10_000]:
                row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = slot.values()
            _atomic_write_table(pa.Table.from_pylist(rows[start : start + 10_000]), pack / EPISODES_PATH.format(**slot))
        (pack / "COMPLETE").touch()
        _finish_pack(self.root)
        self._rows = rows
        self._next_slot = 1 + max(self._slots_of(row) for row in rows)

    def _pack_data(self, reader: LeRobotDataset, pack: Path, rows: list[dict[str, Any]]) -> None:
        sizes = []
        rows_per_file: dict[Path, int] = {}
        for index in range(len(rows)):
            path = reader.data_path(index)
            rows_per_file[path] = rows_per_file.get(path, 0) + int(rows[index]["length"])
        for index in range(len(rows)):
            path = reader.data_path(index)
            sizes.append(path.stat().st_size * int(rows[index]["length"]) / rows_per_file[path])
        for number, group in enumerate(_groups(sizes, self.data_files_size_in_mb * 2**20)):
            tables = [reader._steps(i, f"packing episode {i}") for i in group]
            slot = _slot(number, self.chunks_size)
            _atomic_write_table(pa.concat_tables(tables), pack / DATA_PATH.format(**slot))
            for i in group:
                rows[i]["data/chunk_index"], rows[i]["data/file_index"] = slot["chunk_index"], slot["file_index"]

    def _pack_videos(self, reader: LeRobotDataset, pack: Path, rows: list[dict[str, Any]], key: str) -> None:
        from vlaforge.data.video import concat_segments

        segments = []
        for index, row in enumerate(rows):
            start, stop = float(row[f"videos/{key}/from_timestamp"]), float(row[f"videos/{key}/to_timestamp"])
            segments.append((reader.video_path(index, key), start, stop))
        durations: dict[Path, float] = {}
        for path, start, stop in segments:
            durations[path] = durations.get(path, 0.0) + (stop - start)
        sizes = [path.stat().st_size * (stop - start) / durations[path] for path, start, stop in segments]
        for number, group in enumerate(_groups(sizes, self.video_files_size_in_mb * 2**20)):
            slot = _slot(number, self.chunks_size)
            output = pack / VIDEO_PATH.format(video_key=key, **slot)
            try:
                spans = concat_segments([segments[i] for i in group], output, self.fps)
            except VideoError:  # pieces encoded with different settings: decode and re-encode them together
                camera = key.removeprefix(CAMERA_PREFIX)
                frames = np.concatenate([reader.episode(i).frames(camera).read() for i in group])  # [sum T, H, W, 3]
                encode_video(output, frames, self.fps, self.encoding)
                bounds = np.cumsum([0] + [int(rows[i]["length"]) for i in group]) / self.fps
                spans = list(zip(bounds[:-1], bounds[1:]))
            for i, (start, stop) in zip(group, spans):
                rows[i][f"videos/{key}/chunk_index"], rows[i][f"videos/{key}/file_index"] = slot.values()
                rows[i][f"videos/{key}/from_timestamp"], rows[i][f"videos/{key}/to_timestamp"] = start, stop

    def _dataset_stats(self, progress: bool) -> dict[str, dict[str, np.ndarray]]:
        """stats.json: exact statistics of the numeric columns, aggregated per-episode ones for cameras."""
        from tqdm import tqdm

        numeric = [k for k, f in self.features.items() if _is_numeric(f)]
        running = {key: RunningStats() for key in numeric}
        files = sorted({self.root / DATA_PATH.format(chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
                        for r in self._rows})  # fmt: skip
        for path in tqdm(files, desc="statistics", disable=not progress, leave=False):
            table = _read_table(path, f"statistics of {self.root}", numeric)
            for key in numeric:
                values = _to_numpy(table[key], self.features[key], f"{path}, feature {key!r}")
                running[key].update(values.reshape(len(values), -1))
        out = {key: stats.result() for key, stats in running.items()}
        for key in self.video_keys + self.image_keys:
            names = ("mean", "std", "min", "max", "count", "q01", "q10", "q50", "q90", "q99")
            parts = [{n: np.asarray(row[f"stats/{key}/{n}"]) for n in names if f"stats/{key}/{n}" in row}
                     for row in self._rows]  # fmt: skip
            out[key] = aggregate_stats(parts)
        return out
