"""Helpers for the simulation tests: small images and short episodes keep each test to a few seconds."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from vlaforge.sim.env import Observation

SMALL = 32  # image size for tests that do not look at pixels


class FunctionPolicy:
    """A policy whose `act` is a given function of (call number, observations); for harness tests."""

    name = "scripted-test"

    def __init__(self, fn: Callable[[int, Sequence[Observation]], np.ndarray]) -> None:
        self.fn = fn
        self.calls = 0

    def act(self, observations: Sequence[Observation]) -> np.ndarray:
        self.calls += 1
        return self.fn(self.calls, observations)

    def close(self) -> None:
        pass


@pytest.fixture
def function_policy() -> type[FunctionPolicy]:
    return FunctionPolicy
