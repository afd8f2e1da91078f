"""Fixtures for the trainer tests (helpers.py has the fast config and the 112 px model)."""

from __future__ import annotations

import pytest

from tests.train.helpers import SMALL_PRESET, small_model_config
from vlaforge.config import PRESETS


@pytest.fixture(autouse=True)
def small_preset(monkeypatch):
    """Registers `tiny-112` as a model preset while a test runs."""
    monkeypatch.setitem(PRESETS, SMALL_PRESET, small_model_config)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """`tiny-112` with random weights and the byte tokenizer, as a checkpoint directory."""
    from vlaforge.data.tokenizer import build_tokenizer
    from vlaforge.model.vla import OpenVLA

    path = tmp_path_factory.mktemp("tiny-112")
    OpenVLA.create(small_model_config(), build_tokenizer(), seed=0).save_pretrained(path)
    return path
