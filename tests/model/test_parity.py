"""Parity with the original OpenVLA implementation on the tiny reference fixture.

The fixture (shared/reference/openvla-tiny, see its README) holds the weights, inputs and outputs of the
original `prismatic/extern/hf` code run on CPU in fp32 with sdpa. The checkpoint directory is built from
the fixture exactly as a user would: its `config_json` plus `timm_model_kwargs` for the shrunk towers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vlaforge.infer.generate import greedy_generate
from vlaforge.model.vla import OpenVLA

ATOL = 1e-4  # the fixture README's tolerance for fp32 on CPU


@pytest.fixture(scope="module")
def io(reference_dir):
    return load_file(str(reference_dir / "tiny_openvla_io.safetensors"))


@pytest.fixture(scope="module")
def meta(reference_dir):
    return json.loads((reference_dir / "tiny_openvla_meta.json").read_text())


@pytest.fixture(scope="module")
def model(reference_checkpoint):
    return OpenVLA.from_pretrained(reference_checkpoint)


def prompt_with_prefix(io):
    """The fixture's input_ids exclude the token the original appends in predict_action; the original's own
    generated sequence holds it right after the prompt, so it is read from there (not hard-coded)."""
    n_prompt = io["input_ids"].shape[1]
    return io["generated_ids"][:, : n_prompt + 1]


def test_patch_and_projector_features_match(model, io):
    with torch.no_grad():
        patches = model.vision_backbone(io["pixel_values"])
        projected = model.projector(patches)
    assert patches.shape == io["patch_features"].shape == (1, 256, 80)
    assert torch.allclose(patches, io["patch_features"], atol=ATOL, rtol=0)
    assert torch.allclose(projected, io["projector_features"], atol=ATOL, rtol=0)


def test_logits_match_over_the_multimodal_sequence(model, io):
    with torch.no_grad():
        out = model(io["input_ids"], io["pixel_values"])
    n_patches = model.vision_backbone.num_patches
    assert out.logits.shape == (1, io["input_ids"].shape[1] + n_patches, 32064)  # patches included, as upstream
    assert torch.allclose(out.logits[:, n_patches:], io["logits_text_positions"], atol=ATOL, rtol=0)
    assert torch.allclose(out.logits[:, -1], io["logits_last"], atol=ATOL, rtol=0)


def test_greedy_ids_and_actions_are_identical(model, io, meta):
    ids = prompt_with_prefix(io)
    n_new = io["generated_ids"].shape[1] - ids.shape[1]
    generated = greedy_generate(model, ids, io["pixel_values"], None, n_tokens=n_new)
    assert generated.tolist() == io["generated_ids"][:, ids.shape[1] :].tolist()
    assert generated[0].tolist() == meta["generated_action_ids"]
    actions = model.predict_action(input_ids=ids, pixel_values=io["pixel_values"], unnorm_key="bridge_orig")
    assert actions.dtype == np.float64 and actions.shape == (7,)
    np.testing.assert_array_equal(actions, io["actions"].numpy())


def test_unnorm_key_is_chosen_automatically_with_one_dataset(model, io):
    actions = model.predict_action(input_ids=prompt_with_prefix(io), pixel_values=io["pixel_values"])
    np.testing.assert_array_equal(actions, io["actions"].numpy())


def test_batch_of_two_padded_loss_and_logits(model, io):
    with torch.no_grad():
        out = model(
            io["batch_input_ids"], io["batch_pixel_values"], io["batch_attention_mask"], labels=io["batch_labels"]
        )
    assert abs(out.loss.item() - io["batch_loss"].item()) <= ATOL
    assert torch.allclose(out.logits[:, -1], io["batch_logits_last"], atol=ATOL, rtol=0)


def test_saved_checkpoint_uses_the_original_key_names(model, tmp_path, reference_dir):
    model.save_pretrained(tmp_path)
    original = load_file(str(reference_dir / "tiny_openvla_fp32.safetensors"))
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert set(saved) == set(original)
    assert all(torch.equal(saved[k], original[k]) for k in original)
