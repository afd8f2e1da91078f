"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data.synthetic import write_dataset


@pytest.fixture
def lerobot_dataset(tmp_path) -> tuple[Path, list[dict]]:
    """A finalized 3-episode LeRobot v3 dataset with one 32x32 video camera."""
    root = tmp_path / "demo"
    return root, write_dataset(root)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Data work runs one thread per process (as DataLoader workers do); two threads on a busy 2-core machine
    make every 224 px tensor op wait for a descheduled peer."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
