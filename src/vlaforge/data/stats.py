"""Dataset statistics: mean, std, min, max and quantiles per feature, and `dataset_statistics.json`.

`RunningStats` consumes rows in batches. Mean and std (population, ddof=0 as `np.std` in the original) are
exact for any size, with Chan's pairwise update in float64; min and max are exact. Quantiles are exact
(`np.quantile`, linear interpolation, as the original) while at most `exact_limit` rows were seen. Past that,
memory stays bounded: quantiles come from a uniform reservoir sample of `exact_limit` rows (Algorithm R).
With the default 200,000 rows the rank of an estimated q01 is off by about sqrt(0.01 * 0.99 / 200,000) =
0.02 percentage points (one standard deviation), i.e. it lies between the 0.98th and 1.02nd percentile.

Two schemas are written:
- OpenVLA's `dataset_statistics.json`: `{dataset: {"action": {mean, std, max, min, q01, q99, mask},
  "proprio": {...}, "num_transitions": N, "num_trajectories": M}}`, saved with every checkpoint;
  `unnorm_key` selects the dataset.
- LeRobot's `meta/stats.json`: `{feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.constants import STATS_NAME
from vlaforge.data.episode import DataError, Episode, EpisodeDataset, check_finite

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
EXACT_LIMIT = 200_000  # rows kept for exact quantiles; beyond, a reservoir sample of this many rows


class RunningStats:
    """Statistics of a stream of `[N, D]` batches with bounded memory.

    Args:
        exact_limit: quantiles are exact up to this many rows; beyond, estimated from a reservoir sample.
        seed: seed of the reservoir sampling (estimates are reproducible).
    """

    def __init__(self, exact_limit: int = EXACT_LIMIT, seed: int = 0) -> None:
        self.exact_limit = exact_limit
        self.count = 0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None  # sum of squared deviations from the mean
        self._min: np.ndarray | None = None
        self._max: np.ndarray | None = None
        self._sample: np.ndarray | None = None  # [<= exact_limit, D] rows for the quantiles
        self._filled = 0
        self._rng = np.random.default_rng(seed)

    @property
    def is_exact(self) -> bool:
        """True while every row seen is kept (quantiles exact)."""
        return self.count <= self.exact_limit

    def update(self, rows: np.ndarray) -> None:
        """Adds `[N, D]` rows (a 1-D array is one column)."""
        x = np.asarray(rows, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x.reshape(x.shape[0], -1)  # [N, D]
        if x.shape[0] == 0:
            return
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise DataError(f"rows have {x.shape[1]} dimensions, earlier rows had {self._mean.shape[0]}")
        n, mean, m2 = x.shape[0], x.mean(axis=0), ((x - x.mean(axis=0)) ** 2).sum(axis=0)
        if self._mean is None:
            self._mean, self._m2, self._min, self._max = mean, m2, x.min(axis=0), x.max(axis=0)
            self._sample = np.empty((min(self.exact_limit, max(n, 1024)), x.shape[1]))
        else:
            total = self.count + n
            delta = mean - self._mean
            self._mean = self._mean + delta * n / total
            self._m2 = self._m2 + m2 + delta**2 * self.count * n / total
            self._min, self._max = np.minimum(self._min, x.min(axis=0)), np.maximum(self._max, x.max(axis=0))
        self._reservoir(x)
        self.count += n

    def _reservoir(self, x: np.ndarray) -> None:
        free = self.exact_limit - self._filled
        head, tail = x[:free], x[free:]
        if len(head):
            needed = self._filled + len(head)
            if needed > self._sample.shape[0]:  # grow geometrically up to exact_limit
                grown = np.empty((min(self.exact_limit, max(needed, 2 * self._sample.shape[0])), x.shape[1]))
                grown[: self._filled] = self._sample[: self._filled]
                self._sample = grown
            self._sample[self._filled : needed] = head
            self._filled = needed
        if len(tail):
            # Algorithm R: the i-th row overall (0-based) replaces a random slot with probability k / (i + 1).
            seen = self.count + len(head) + np.arange(len(tail))  # [N_tail] global row indices
            slots = (self._rng.random(len(tail)) * (seen + 1)).astype(np.int64)
            keep = slots < self.exact_limit
            self._sample[slots[keep]] = tail[keep]

    def result(self, quantiles: dict[str, float] = QUANTILES) -> dict[str, np.ndarray]:
        """`{mean, std, min, max, count, q01, ...}`, each `[D]` (count is `[1]`)."""
        if self.count == 0:
            raise DataError("no rows were given; statistics of an empty feature are undefined")
        sample = self._sample[: self._filled]
        out = {
            "mean": self._mean,
            "std": np.sqrt(np.maximum(self._m2 / self.count, 0.0)),
            "min": self._min,
            "max": self._max,
            "count": np.array([self.count]),
        }
        for key, q in quantiles.items():
            out[key] = np.quantile(sample, q, axis=0)
        return out


def feature_stats(rows: np.ndarray, exact_limit: int = EXACT_LIMIT) -> dict[str, np.ndarray]:
    """Statistics of one `[N, D]` array (exact quantiles up to `exact_limit` rows)."""
    stats = RunningStats(exact_limit)
    stats.update(rows)
    return stats.result()


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of `[N, H, W, 3]` uint8 frames scaled to [0, 1], shaped `[3, 1, 1]` as LeRobot's."""
    pixels = frames.reshape(-1, frames.shape[-1]).astype(np.float32) / 255.0  # [N * H * W, 3]
    step = max(1, pixels.shape[0] // 100_000)  # quantiles over at most ~100k pixels
    out = {
        "mean": pixels.mean(axis=0, dtype=np.float64),
        "std": pixels.std(axis=0, dtype=np.float64),
        "min": pixels.min(axis=0).astype(np.float64),
        "max": pixels.max(axis=0).astype(np.float64),
    }
    out.update({key: np.quantile(pixels[::step], q, axis=0) for key, q in QUANTILES.items()})
    shaped = {key: value.reshape(-1, 1, 1) for key, value in out.items()}  # [3, 1, 1]
    shaped["count"] = np.array([frames.shape[0]])
    return shaped


def aggregate_stats(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combines statistics of disjoint parts: exact mean, std, min, max; quantiles as count-weighted means.

    Used for image features, whose per-episode statistics are kept instead of the pixels. The quantile
    average is an approximation (the same one LeRobot makes when it merges episode statistics).
    """
    if not parts:
        raise DataError("no statistics to aggregate")
    counts = np.array([float(p["count"].reshape(-1)[0]) for p in parts])
    weights = counts / counts.sum()
    w = weights.reshape((-1,) + (1,) * np.asarray(parts[0]["mean"]).ndim)  # [P, 1, ...] over the stats' shape
    means = np.stack([np.asarray(p["mean"], dtype=np.float64) for p in parts])
    mean = (w * means).sum(axis=0)
    variances = np.stack([np.asarray(p["std"], dtype=np.float64) ** 2 for p in parts])
    variance = (w * (variances + (means - mean) ** 2)).sum(axis=0)
    out = {
        "mean": mean,
        "std": np.sqrt(variance),
        "min": np.min(np.stack([p["min"] for p in parts]), axis=0),
        "max": np.max(np.stack([p["max"] for p in parts]), axis=0),
        "count": np.array([int(counts.sum())]),
    }
    for key in QUANTILES:
        if all(key in p for p in parts):
            out[key] = (w * np.stack([np.asarray(p[key], dtype=np.float64) for p in parts])).sum(axis=0)
    return out


def compute_dataset_stats(
    dataset: EpisodeDataset, exact_limit: int = EXACT_LIMIT, progress: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Statistics of a dataset's actions and (if present) states: `{"action": {...}, "state": {...}}`.

    Reads actions and states only (no frames). NaN or inf raises a DataError naming the episode.
    """
    from tqdm import tqdm

    actions, states = RunningStats(exact_limit), RunningStats(exact_limit, seed=1)
    episodes: Iterable[Episode] = iter(dataset)  # sequential: the fast path of every format (RLDS above all)
    if progress:
        episodes = tqdm(episodes, desc=f"statistics of {dataset.name}", total=dataset.num_episodes, leave=False)
    for episode in episodes:
        check_finite(episode.actions, f"{episode.where}, feature 'action'")
        try:
            actions.update(episode.actions)
            if episode.state is not None:
                check_finite(episode.state, f"{episode.where}, feature 'state'")
                states.update(episode.state)
        except DataError as err:
            raise DataError(f"{episode.where}: {err}") from err
    out = {"action": actions.result()}
    if states.count:
        out["state"] = states.result()
    return out


def default_action_mask(action_dim: int) -> list[bool]:
    """OpenVLA's normalization mask: for 7-D end-effector actions the gripper (last) stays raw; else all dims."""
    return [True] * 6 + [False] if action_dim == 7 else [True] * action_dim


def openvla_entry(
    stats: dict[str, dict[str, np.ndarray]],
    num_trajectories: int,
    action_mask: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """One dataset's entry of `dataset_statistics.json`, in the original's schema."""
    action = stats["action"]
    dim = int(np.asarray(action["mean"]).shape[0])
    mask = list(action_mask) if action_mask is not None else default_action_mask(dim)
    if len(mask) != dim:
        raise DataError(f"action mask has {len(mask)} entries but the actions have {dim} dimensions")

    def block(s: dict[str, np.ndarray]) -> dict[str, Any]:
        return {k: np.asarray(s[k], dtype=np.float64).tolist() for k in ("mean", "std", "max", "min", "q01", "q99")}

    entry: dict[str, Any] = {"action": {**block(action), "mask": [bool(m) for m in mask]}}
    if "state" in stats:
        entry["proprio"] = block(stats["state"])
    entry["num_transitions"] = int(np.asarray(action["count"]).reshape(-1)[0])
    entry["num_trajectories"] = int(num_trajectories)
    return entry


def save_dataset_statistics(statistics: dict[str, dict[str, Any]], directory: str | Path) -> Path:
    """Writes `dataset_statistics.json` (keyed by dataset name) into `directory`; returns its path."""
    path = Path(directory) / STATS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(statistics, indent=2) + "\n")
    return path


def load_dataset_statistics(path: str | Path) -> dict[str, dict[str, Any]]:
    """Reads `dataset_statistics.json` (a file, or a directory holding it) and validates every action entry."""
    from vlaforge.actions.normalize import ActionStats

    path = Path(path)
    path = path / STATS_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no {STATS_NAME} at {path}")
    try:
        statistics = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    for name, entry in statistics.items():
        if not isinstance(entry, dict) or "action" not in entry:
            raise DataError(f"{path}: dataset {name!r} has no 'action' statistics")
        ActionStats.from_dict(entry["action"], dataset=name, feature="action")  # raises on malformed entries
    return statistics


def to_jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    """Nested statistics with numpy arrays -> plain lists and numbers for JSON."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, dict):
            out[key] = to_jsonable(value)
        elif isinstance(value, np.ndarray | np.generic):
            out[key] = value.tolist()
        else:
            out[key] = value
    return out
