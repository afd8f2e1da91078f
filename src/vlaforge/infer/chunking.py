"""Executing action chunks: open loop, or temporal ensembling across overlapping chunks.

A chunked model predicts the next K actions at once. Two ways to turn that into one action per step:

- "open-loop": execute the first `execute_steps` actions of a chunk, then query the model again
  (OpenVLA-OFT's `num_open_loop_steps`). Fewer model calls, less reactive.
- "ensemble": query every step and average all predictions made for the current step by the chunks that
  cover it, the oldest weighted most: `w_i = exp(-decay * i)`, i = 0 for the oldest (ACT's temporal
  ensembling). Smooth, one model call per step.

`ChunkExecutor` keeps that state for several environments at once, so a batched evaluation can ask which
environments need a model call, give it their chunks, and read one action per environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass
class ChunkExecution:
    """How chunks become actions."""

    mode: Literal["open-loop", "ensemble"] = "open-loop"  # see the module docstring
    execute_steps: int | None = None  # open-loop: actions run per chunk (None: the whole chunk)
    ensemble_decay: float = 0.01  # ensemble: weight decay per chunk age (0 = plain average)

    def __post_init__(self) -> None:
        if self.mode not in ("open-loop", "ensemble"):
            raise ValueError(f"chunk execution mode must be 'open-loop' or 'ensemble', got {self.mode!r}")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1 (or None for the whole chunk), got {self.execute_steps}")
        if self.ensemble_decay < 0:
            raise ValueError(f"ensemble_decay must be >= 0, got {self.ensemble_decay}")


class ChunkExecutor:
    """Per-environment chunk state. Use: `needs_query()` -> model on those envs -> `push()` -> `pop()`.

    Args:
        execution: open-loop or ensemble settings.
        n_envs: number of environments stepped together.
    """

    def __init__(self, execution: ChunkExecution, n_envs: int) -> None:
        self.execution = execution
        self.n_envs = n_envs
        self.reset()

    def reset(self, env: int | None = None) -> None:
        """Forgets the chunks of one environment (new episode), or of all."""
        envs = range(self.n_envs) if env is None else [env]
        if env is None:
            self._queues: list[list[np.ndarray]] = [[] for _ in range(self.n_envs)]  # open-loop: actions left
            self._chunks: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(self.n_envs)]  # (start, chunk)
            self._time = [0] * self.n_envs
        for e in envs:
            self._queues[e], self._chunks[e], self._time[e] = [], [], 0

    def needs_query(self) -> list[int]:
        """Environments whose next action needs a new model call."""
        if self.execution.mode == "ensemble":
            return list(range(self.n_envs))
        return [e for e in range(self.n_envs) if not self._queues[e]]

    def push(self, env: int, chunk: np.ndarray) -> None:
        """Stores a new prediction for `env`: `[K, A]` (or `[A]`, a chunk of one)."""
        chunk = np.atleast_2d(np.asarray(chunk, dtype=np.float64))  # [K, A]
        if self.execution.mode == "ensemble":
            self._chunks[env].append((self._time[env], chunk))
            return
        steps = self.execution.execute_steps or chunk.shape[0]
        self._queues[env] = list(chunk[:steps])

    def pop(self, env: int) -> np.ndarray:
        """The action `[A]` to execute now in `env`; advances its clock."""
        if self.execution.mode == "open-loop":
            if not self._queues[env]:
                raise RuntimeError(f"environment {env} has no action queued; call push() after needs_query()")
            action = self._queues[env].pop(0)
        else:
            action = self._ensemble(env)
        self._time[env] += 1
        return action

    def _ensemble(self, env: int) -> np.ndarray:
        now = self._time[env]
        live = [(start, chunk) for start, chunk in self._chunks[env] if now - start < chunk.shape[0]]
        if not live:
            raise RuntimeError(f"environment {env} has no chunk covering step {now}; call push() first")
        self._chunks[env] = live  # drop chunks that ended
        predictions = np.stack([chunk[now - start] for start, chunk in live])  # [n, A], oldest first
        weights = np.array([math.exp(-self.execution.ensemble_decay * i) for i in range(len(live))])  # [n]
        return (weights[:, None] * predictions).sum(axis=0) / weights.sum()
