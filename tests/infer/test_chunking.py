"""Chunk execution: open loop and temporal ensembling, several environments at once."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.infer.chunking import ChunkExecution, ChunkExecutor


def chunk(start: float, k: int = 4) -> np.ndarray:
    return np.arange(start, start + k, dtype=np.float64)[:, None] * np.ones((1, 2))  # [K, A=2]


def test_open_loop_runs_the_first_n_actions_then_asks_again():
    ex = ChunkExecutor(ChunkExecution("open-loop", execute_steps=2), n_envs=2)
    assert ex.needs_query() == [0, 1]
    ex.push(0, chunk(0))
    ex.push(1, chunk(10))
    assert [ex.pop(0)[0], ex.pop(0)[0]] == [0.0, 1.0]
    assert ex.pop(1)[0] == 10.0
    assert ex.needs_query() == [0]  # env 1 still has one queued action
    ex.push(0, chunk(100))
    assert ex.pop(0)[0] == 100.0


def test_whole_chunk_by_default_and_single_actions_work():
    ex = ChunkExecutor(ChunkExecution("open-loop"), n_envs=1)
    ex.push(0, chunk(0, k=3))
    assert [ex.pop(0)[0] for _ in range(3)] == [0.0, 1.0, 2.0]
    ex.push(0, np.array([7.0, 8.0]))  # an unchunked model's [A]
    assert ex.pop(0).tolist() == [7.0, 8.0]


def test_ensemble_averages_overlapping_predictions_oldest_weighted_most():
    decay = 0.5
    ex = ChunkExecutor(ChunkExecution("ensemble", ensemble_decay=decay), n_envs=1)
    ex.push(0, chunk(0))  # predicted at t=0 for t=0..3
    assert ex.pop(0)[0] == 0.0
    ex.push(0, chunk(20))  # predicted at t=1 for t=1..4
    w = np.exp(-decay * np.arange(2))
    expected = (w[0] * 1.0 + w[1] * 20.0) / w.sum()  # step 1: the old chunk says 1, the new one 20
    assert ex.pop(0)[0] == pytest.approx(expected)


def test_ensemble_drops_expired_chunks_and_reset_forgets():
    ex = ChunkExecutor(ChunkExecution("ensemble", ensemble_decay=0.0), n_envs=1)
    ex.push(0, chunk(0, k=1))
    ex.pop(0)
    ex.push(0, chunk(5, k=1))
    assert ex.pop(0)[0] == 5.0  # the first chunk covered only step 0
    ex.reset(0)
    with pytest.raises(RuntimeError, match="no chunk covering step 0"):
        ex.pop(0)


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="'open-loop' or 'ensemble'"):
        ChunkExecution("greedy")
    with pytest.raises(ValueError, match="execute_steps must be >= 1"):
        ChunkExecution("open-loop", execute_steps=0)
