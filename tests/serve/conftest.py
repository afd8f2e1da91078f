"""Fixtures of the serving tests: the tiny model behind a BatchPolicy, and a live loopback server."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.serve.app import create_app
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.policy import BatchPolicy
from vlaforge.serve.server import ServerThread


def rgb(seed: int, height: int = 64, width: int = 80) -> np.ndarray:
    """A random [H, W, 3] uint8 frame."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def policy(tiny_model) -> BatchPolicy:
    return BatchPolicy(tiny_model, name="tiny")


@pytest.fixture(scope="module")
def live_server(policy):
    """A real uvicorn server on 127.0.0.1 (ephemeral port) in a thread, batching up to 8 for 20 ms."""
    with ServerThread(create_app(policy, ServeConfig(max_batch_size=8, max_wait_ms=20.0))) as server:
        yield server
