"""Shared fixtures: the tiny model (random weights, byte tokenizer) and the reference fixture's checkpoint."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openvla-tiny"

TINY_NORM_STATS = {
    "synthetic": {
        "action": {
            "q01": [-0.05, -0.05, -0.05, -0.1, -0.1, -0.2, 0.0],
            "q99": [0.05, 0.05, 0.05, 0.1, 0.1, 0.2, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    }
}


def make_tiny_model(norm_stats: dict | None = None, seed: int = 0):
    """A fresh tiny OpenVLA with the byte tokenizer attached (random weights)."""
    from vlaforge.config import get_preset
    from vlaforge.data.tokenizer import build_tokenizer
    from vlaforge.model.vla import OpenVLA

    config = get_preset("tiny")
    config.norm_stats = json.loads(json.dumps(norm_stats or TINY_NORM_STATS))
    return OpenVLA.create(config, build_tokenizer(), seed=seed)


@pytest.fixture(scope="session")
def tiny_model():
    """Session-wide tiny model. Do not mutate it; build your own with make_tiny_model() if you must."""
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    """The tiny model saved as a checkpoint directory (config.json, safetensors, statistics, tokenizer)."""
    path = tmp_path_factory.mktemp("tiny-checkpoint")
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """shared/reference/openvla-tiny: outputs of the original implementation (see its README)."""
    if not REFERENCE_DIR.is_dir():
        pytest.fail(f"reference fixture not found at {REFERENCE_DIR}; it ships beside the repo in shared/")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def reference_checkpoint(tmp_path_factory, reference_dir) -> Path:
    """A checkpoint directory built from the fixture: its config_json + timm_model_kwargs + its weights."""
    meta = json.loads((reference_dir / "tiny_openvla_meta.json").read_text())
    config = dict(meta["config_json"])
    overrides = meta["timm_create_model_overrides"]
    config["timm_model_kwargs"] = [overrides[model_id.split(".")[0]] for model_id in config["timm_model_ids"]]
    path = tmp_path_factory.mktemp("reference-checkpoint")
    (path / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(reference_dir / "tiny_openvla_fp32.safetensors", path / "model.safetensors")
    return path
