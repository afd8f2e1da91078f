"""BOUNDS_Q99 action normalization with a mask, and the `dataset_statistics.json` schema.

Normalization maps each masked dimension from [q01, q99] of the training data to [-1, 1] and clips;
unmasked dimensions (the gripper, already in 0..1) pass through untouched. This is what OpenVLA applies
to every dataset, and what `predict_action` inverts with the statistics selected by `unnorm_key`.

Everything here fails loud: a missing key, a dimension mismatch or a non-finite value raises an error that
names the dataset and the feature. There is never a silent identity fallback.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlaforge.constants import NORM_EPS


class NormalizationError(ValueError):
    """Statistics are missing, malformed or do not fit the data they are applied to."""


@dataclass
class ActionStats:
    """Per-dimension statistics of one feature (usually "action") of one dataset.

    Attributes:
        q01: 1st percentile per dimension (lower normalization bound).
        q99: 99th percentile per dimension (upper normalization bound).
        mask: True where the dimension is normalized; False keeps it raw (the gripper).
        mean, std, min, max: further statistics, kept for inspection and other normalizers.
        dataset: dataset name, used in error messages.
        feature: feature name ("action" or "proprio"), used in error messages.
    """

    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    dataset: str = "<unnamed>"
    feature: str = "action"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """Number of dimensions."""
        return int(self.q01.shape[0])

    @classmethod
    def from_dict(cls, stats: dict[str, Any], dataset: str = "<unnamed>", feature: str = "action") -> ActionStats:
        """Reads one feature's entry of `dataset_statistics.json` (`{"q01": [...], "q99": [...], ...}`)."""
        where = f"dataset {dataset!r}, feature {feature!r}"
        for key in ("q01", "q99"):
            if key not in stats:
                raise NormalizationError(
                    f"statistics for {where} have no {key!r} (found keys {sorted(stats)}); "
                    "recompute them with `vlaforge data inspect` or the dataset's stats writer"
                )
        q01 = np.asarray(stats["q01"], dtype=np.float64)
        q99 = np.asarray(stats["q99"], dtype=np.float64)
        mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
        optional = {k: np.asarray(stats[k], dtype=np.float64) for k in ("mean", "std", "min", "max") if k in stats}
        known = {"q01", "q99", "mask", "mean", "std", "min", "max"}
        extra = {k: v for k, v in stats.items() if k not in known}
        out = cls(q01=q01, q99=q99, mask=mask, dataset=dataset, feature=feature, extra=extra, **optional)
        out.validate()
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready entry in the original's schema."""
        out: dict[str, Any] = {}
        for key in ("mean", "std", "max", "min", "q01", "q99"):
            value = getattr(self, key)
            if value is not None:
                out[key] = np.asarray(value).tolist()
        out["mask"] = self.mask.tolist()
        out.update(self.extra)
        return out

    def validate(self) -> None:
        """Checks shapes and finiteness; raises NormalizationError naming the dataset and feature."""
        where = f"dataset {self.dataset!r}, feature {self.feature!r}"
        for key in ("q01", "q99", "mask", "mean", "std", "min", "max"):
            value = getattr(self, key)
            if value is None:
                continue
            if value.shape != self.q01.shape or value.ndim != 1:
                raise NormalizationError(f"{where}: {key} has shape {value.shape}, expected {self.q01.shape}")
            if key != "mask" and not np.all(np.isfinite(value)):
                raise NormalizationError(f"{where}: {key} contains NaN or inf: {value.tolist()}")
        if np.any(self.q99 < self.q01):
            raise NormalizationError(f"{where}: q99 < q01 in dims {np.nonzero(self.q99 < self.q01)[0].tolist()}")

    def check_dim(self, dim: int) -> None:
        """Raises if data of `dim` dimensions is about to be (un)normalized with these statistics."""
        if dim != self.dim:
            raise NormalizationError(
                f"dataset {self.dataset!r}, feature {self.feature!r}: data has {dim} dimensions "
                f"but the statistics have {self.dim}; the statistics belong to another dataset or robot"
            )


def _check_finite(x: np.ndarray, stats: ActionStats) -> None:
    if not np.all(np.isfinite(x)):
        bad = np.argwhere(~np.isfinite(x))[:3].tolist()
        raise NormalizationError(
            f"dataset {stats.dataset!r}, feature {stats.feature!r}: NaN or inf values at indices {bad}"
        )


def normalize_actions(actions: np.ndarray, stats: ActionStats) -> np.ndarray:
    """BOUNDS_Q99: `clip(2 (x - q01) / (q99 - q01 + eps) - 1, -1, 1)` on masked dims, raw elsewhere.

    Dimensions whose min equals max are set to 0, as the original does. Dimensions with q99 == q01 but
    varying values saturate at +-1; a warning says so.

    Args:
        actions: `[..., A]` raw actions.
        stats: statistics of the dataset the actions come from.

    Returns:
        `[..., A]` float64 normalized actions.
    """
    x = np.asarray(actions, dtype=np.float64)
    stats.check_dim(x.shape[-1])
    _check_finite(x, stats)
    degenerate = stats.mask & (stats.q99 == stats.q01)
    if np.any(degenerate):
        warnings.warn(
            f"dataset {stats.dataset!r}, feature {stats.feature!r}: q99 == q01 in dims "
            f"{np.nonzero(degenerate)[0].tolist()}; values there saturate at +-1 (as in the original)",
            stacklevel=2,
        )
    scaled = np.clip(2.0 * (x - stats.q01) / (stats.q99 - stats.q01 + NORM_EPS) - 1.0, -1.0, 1.0)
    out = np.where(stats.mask, scaled, x)
    if stats.min is not None and stats.max is not None:
        out = np.where(stats.min == stats.max, 0.0, out)
    return out


def unnormalize_actions(normalized: np.ndarray, stats: ActionStats) -> np.ndarray:
    """Inverse of `normalize_actions` on masked dims: `0.5 (a + 1) (q99 - q01) + q01`; raw elsewhere.

    Args:
        normalized: `[..., A]` actions in [-1, 1] (e.g. decoded bin centres).
        stats: statistics selected by `unnorm_key`.

    Returns:
        `[..., A]` float64 actions in the robot's units.
    """
    a = np.asarray(normalized, dtype=np.float64)
    stats.check_dim(a.shape[-1])
    _check_finite(a, stats)
    return np.where(stats.mask, 0.5 * (a + 1.0) * (stats.q99 - stats.q01) + stats.q01, a)


def select_unnorm_key(norm_stats: dict[str, Any] | None, unnorm_key: str | None) -> str:
    """Resolves which dataset's statistics to unnormalize with.

    With one dataset the key may be omitted. Otherwise the key must name one of them; the error lists the
    available keys, so the user can pick (e.g. `bridge_orig` for WidowX).
    """
    if not norm_stats:
        raise NormalizationError(
            "this checkpoint has no normalization statistics (config.json `norm_stats` and "
            "dataset_statistics.json are both empty); actions cannot be unnormalized"
        )
    keys = sorted(norm_stats)
    if unnorm_key is None:
        if len(keys) == 1:
            return keys[0]
        raise NormalizationError(
            f"the checkpoint was trained on {len(keys)} datasets; pass unnorm_key=... with one of: {', '.join(keys)}"
        )
    if unnorm_key not in norm_stats:
        raise NormalizationError(f"unknown unnorm_key {unnorm_key!r}; available keys: {', '.join(keys)}")
    return unnorm_key


def action_stats_for(norm_stats: dict[str, Any], unnorm_key: str | None) -> ActionStats:
    """The `ActionStats` of the selected dataset's "action" feature."""
    key = select_unnorm_key(norm_stats, unnorm_key)
    entry = norm_stats[key]
    if "action" not in entry:
        raise NormalizationError(f"statistics of dataset {key!r} have no 'action' entry (found {sorted(entry)})")
    return ActionStats.from_dict(entry["action"], dataset=key, feature="action")
