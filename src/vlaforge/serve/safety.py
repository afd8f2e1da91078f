"""The safety layer: limits applied to every action before it leaves the server.

OpenVLA's maintainers advise zero-shot users to scale actions down (2-5x) and to keep the arm inside a
safe box by hand (openvla#192). Here the lab sets those limits once, on the server, and no client can
forget them. In order:

1. scale: `a[d] *= scale` on the scaled dims (by default those the statistics normalize, which leaves
   the gripper, an absolute 0..1 command, alone);
2. per-dimension clip: `a = clip(a, action_low, action_high)`;
3. workspace bounds, for delta position actions (OpenVLA's end-effector deltas): with `n =
   len(workspace_low)`, the position the action leads to, `state[:n] + a[:n]`, is clamped into the box,
   and `a[:n]` becomes the delta to the clamped position. For a chunk `[K, A]` the positions the chunk
   would reach (`state + cumsum(a)`) are clamped. The client must then send `state`, whose first n
   entries are the current position in the units of the actions.

Everything is off by default. /metadata reports the active limits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class SafetyConfig:
    """Limits on served actions, in the robot's units (after unnormalization); all off by default."""

    scale: float = 1.0  # multiply actions by this (e.g. 0.3 for a careful zero-shot run)
    scale_dims: list[int] | None = None  # dims to scale; None = the dims the statistics normalize (not gripper)
    action_low: list[float] | None = None  # per-dimension lower clip, one value per action dim
    action_high: list[float] | None = None  # per-dimension upper clip, one value per action dim
    workspace_low: list[float] | None = None  # lower corner of the box state[:n] + action[:n] must stay in
    workspace_high: list[float] | None = None  # upper corner of that box (same length n as workspace_low)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ValueError naming the field and the fix when the limits are inconsistent."""
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"safety scale must be a positive number, got {self.scale}")
        _check_bounds("action_low", self.action_low, "action_high", self.action_high)
        _check_bounds("workspace_low", self.workspace_low, "workspace_high", self.workspace_high)

    @property
    def uses_workspace(self) -> bool:
        """True when workspace bounds are set (requests must then carry `state`)."""
        return self.workspace_low is not None

    @property
    def active(self) -> bool:
        """True when any limit is set."""
        return self.scale != 1.0 or self.action_low is not None or self.uses_workspace


def _check_bounds(low_name: str, low: list[float] | None, high_name: str, high: list[float] | None) -> None:
    if (low is None) != (high is None):
        raise ValueError(f"set both {low_name} and {high_name}, or neither")
    if low is None or high is None:
        return
    if len(low) != len(high) or not low:
        raise ValueError(f"{low_name} and {high_name} need the same, non-zero length; got {len(low)} and {len(high)}")
    if not all(math.isfinite(x) for x in [*low, *high]):
        raise ValueError(f"{low_name} and {high_name} must be finite numbers")
    bad = [i for i, (lo, hi) in enumerate(zip(low, high)) if lo > hi]
    if bad:
        raise ValueError(f"{low_name} > {high_name} in dims {bad}; swap them")


class SafetyLayer:
    """Applies a `SafetyConfig` to the actions of every statistics key the model serves.

    Args:
        config: the limits.
        masks: per `unnorm_key`, the `[A]` bool mask of dims the statistics normalize (the default scaled
            dims); its length is also that key's action dimension, against which the limits are checked.
    """

    def __init__(self, config: SafetyConfig, masks: dict[str, np.ndarray]) -> None:
        config.validate()
        self.config = config
        self.scaled: dict[str, np.ndarray] = {}  # unnorm_key -> [A] bool, the dims `scale` applies to
        for key, mask in masks.items():
            self.scaled[key] = self._scaled_dims(key, np.asarray(mask, dtype=bool))

    def _scaled_dims(self, key: str, mask: np.ndarray) -> np.ndarray:
        dim, cfg = mask.shape[0], self.config
        if cfg.action_low is not None and len(cfg.action_low) != dim:
            raise ValueError(
                f"safety action_low/action_high have {len(cfg.action_low)} values but actions of {key!r} have "
                f"{dim} dimensions; give one bound per dimension"
            )
        if cfg.workspace_low is not None and len(cfg.workspace_low) > dim:
            raise ValueError(f"workspace bounds cover {len(cfg.workspace_low)} dims, actions of {key!r} have {dim}")
        if cfg.scale_dims is None:
            return mask
        if any(not 0 <= d < dim for d in cfg.scale_dims):
            raise ValueError(f"safety scale_dims {cfg.scale_dims} must lie in 0..{dim - 1} (actions of {key!r})")
        return np.isin(np.arange(dim), cfg.scale_dims)

    def check_state(self, state: np.ndarray | None) -> None:
        """Raises ValueError when workspace bounds are set and `state` cannot anchor them."""
        if not self.config.uses_workspace:
            return
        n = len(self.config.workspace_low or [])
        if state is None or state.ndim != 1 or state.shape[0] < n:
            got = "no state" if state is None else f"state of shape {list(state.shape)}"
            raise ValueError(
                f"this server enforces workspace bounds on the first {n} action dims, so each request must send "
                f"'state' with at least {n} entries (the current end-effector position); got {got}"
            )

    def apply(self, actions: np.ndarray, unnorm_key: str, state: np.ndarray | None = None) -> np.ndarray:
        """The limited actions.

        Args:
            actions: `[A]` or `[K, A]` actions of statistics `unnorm_key`, in robot units.
            unnorm_key: which statistics produced them (selects the default scaled dims).
            state: `[S]` proprioception; its first n entries anchor the workspace bounds.

        Returns:
            float64 actions of the same shape.
        """
        cfg = self.config
        out = np.array(actions, dtype=np.float64)  # a copy: the caller's array is left alone
        if cfg.scale != 1.0:
            out[..., self.scaled[unnorm_key]] *= cfg.scale
        if cfg.action_low is not None:
            out = np.clip(out, cfg.action_low, cfg.action_high)
        if cfg.workspace_low is not None:
            self.check_state(state)
            out = self._clamp_to_workspace(out, np.asarray(state, dtype=np.float64))
        return out

    def _clamp_to_workspace(self, actions: np.ndarray, state: np.ndarray) -> np.ndarray:
        low, high = np.asarray(self.config.workspace_low), np.asarray(self.config.workspace_high)
        n = low.shape[0]
        start = state[:n]  # [n]
        chunk = actions.reshape(-1, actions.shape[-1])  # [K, A], K = 1 for a single action
        reached = start + np.cumsum(chunk[:, :n], axis=0)  # [K, n] positions after each step
        clamped = np.clip(reached, low, high)
        chunk[:, :n] = np.diff(np.vstack([start, clamped]), axis=0)  # deltas between clamped positions
        return chunk.reshape(actions.shape)

    def describe(self) -> dict[str, Any]:
        """The limits, for /metadata."""
        return {"active": self.config.active, **asdict(self.config)}
