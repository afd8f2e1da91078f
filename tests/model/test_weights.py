"""Checkpoint directories: round trips, sharding, and clear errors for every way a checkpoint can be broken."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlaforge.model.vla import OpenVLA
from vlaforge.model.weights import CheckpointError


def copy_checkpoint(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_round_trip_reproduces_outputs(tiny_model, tiny_checkpoint):
    loaded = OpenVLA.from_pretrained(tiny_checkpoint)
    batch = tiny_model.processor(np.zeros((32, 32, 3), np.uint8), "wave")
    with torch.no_grad():
        a = tiny_model(batch["input_ids"], batch["pixel_values"]).logits
        b = loaded(batch["input_ids"], batch["pixel_values"]).logits
    assert torch.equal(a, b)
    assert loaded.processor is not None and loaded.norm_stats == tiny_model.norm_stats
    assert json.loads((tiny_checkpoint / "dataset_statistics.json").read_text()) == tiny_model.norm_stats


def test_sharded_save_writes_an_index_and_loads(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (tmp_path / "model.safetensors").exists()
    loaded = OpenVLA.from_pretrained(tmp_path)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_bf16_loading_casts_weights(tiny_checkpoint):
    loaded = OpenVLA.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    assert loaded.projector.fc1.weight.dtype == torch.bfloat16
    assert loaded.predict_action(np.zeros((8, 8, 3), np.uint8), "wave").shape == (7,)


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        OpenVLA.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="no config file"):
        OpenVLA.from_pretrained(tmp_path)


def test_pickle_only_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle files are not loaded"):
        OpenVLA.from_pretrained(path)


def test_missing_key_is_named(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    state = load_file(str(path / "model.safetensors"))
    del state["projector.fc2.bias"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\), e.g. projector.fc2.bias"):
        OpenVLA.from_pretrained(path)


def test_unexpected_key_names_its_file(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    state = load_file(str(path / "model.safetensors"))
    state["projector.fc9.weight"] = torch.zeros(2)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"projector.fc9.weight \(in model.safetensors\)"):
        OpenVLA.from_pretrained(path)


def test_shape_mismatch_names_key_file_and_shapes(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    state = load_file(str(path / "model.safetensors"))
    state["projector.fc3.bias"] = torch.zeros(65)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"projector.fc3.bias in model.safetensors has shape \[65\].*\[64\]"):
        OpenVLA.from_pretrained(path)


def test_corrupt_safetensors_file(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        OpenVLA.from_pretrained(path)


def test_index_naming_a_missing_shard(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path, max_shard_bytes=200_000)
    (tmp_path / "model-00002-of-00002.safetensors").unlink(missing_ok=True)
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=f"lists shards that are not in .*{shards[-1].name}"):
        OpenVLA.from_pretrained(tmp_path)


def test_config_from_another_model(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["timm_model_kwargs"][0]["depth"] = 4
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="missing key.*featurizer.blocks.3"):
        OpenVLA.from_pretrained(path)


def test_invalid_json_config(tiny_checkpoint, tmp_path):
    path = copy_checkpoint(tiny_checkpoint, tmp_path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        OpenVLA.from_pretrained(path)
