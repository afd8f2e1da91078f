"""OpenVLA forward semantics: sequence layout, action-only loss, and bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlaforge.actions.normalize import NormalizationError
from vlaforge.constants import IGNORE_INDEX
from vlaforge.model.vla import build_multimodal_sequence


def test_patches_are_spliced_after_bos_unmasked_and_unlabelled():
    text = torch.arange(2 * 3 * 1, dtype=torch.float32).reshape(2, 3, 1)  # [B, T, D]
    patches = torch.full((2, 4, 1), -1.0)  # [B, P, D]
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    labels = torch.tensor([[IGNORE_INDEX, 5, 6], [IGNORE_INDEX, 7, IGNORE_INDEX]])
    embeds, full_mask, full_labels = build_multimodal_sequence(text, patches, mask, labels)
    assert embeds[0, :, 0].tolist() == [0.0, -1, -1, -1, -1, 1.0, 2.0]
    assert full_mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0]]
    assert full_labels[1].tolist() == [IGNORE_INDEX] * 5 + [7, IGNORE_INDEX]


def test_loss_ignores_prompt_tokens_and_follows_action_labels(tiny_model):
    proc = tiny_model.processor
    tok = tiny_model.action_tokenizer
    action_ids = tok.encode(np.linspace(-0.9, 0.9, 7)).tolist()
    ids, labels = proc.prompts.training_ids("open the drawer", action_ids)
    pixels = proc.image_transform(np.zeros((16, 16, 3), np.uint8))[None]
    ids_t, labels_t = torch.tensor([ids]), torch.tensor([labels])
    with torch.no_grad():
        base = tiny_model(ids_t, pixels, labels=labels_t).loss
        other_prompt_label = labels_t.clone()
        other_prompt_label[0, 3] = IGNORE_INDEX  # already ignored: changing an ignored position is a no-op
        same = tiny_model(ids_t, pixels, labels=other_prompt_label).loss
        other_action = labels_t.clone()
        other_action[0, -2] = tok.encode(np.array([0.0]))[0]  # a different action label changes the loss
        changed = tiny_model(ids_t, pixels, labels=other_action).loss
    assert torch.equal(base, same)
    assert not torch.isclose(base, changed)


def test_wrong_pixel_shape_is_explained(tiny_model):
    ids = torch.tensor([[1, 5, 6]])
    with pytest.raises(ValueError, match=r"pixel_values must have shape \[B, 6, 224, 224\]"):
        tiny_model(ids, torch.zeros(1, 3, 224, 224))


def test_bad_images_and_instructions_are_explained(tiny_model):
    with pytest.raises(ValueError, match="uint8"):
        tiny_model.predict_action(np.zeros((8, 8, 3), np.float32), "wave")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        tiny_model.predict_action(np.zeros((8, 8), np.uint8), "wave")
    with pytest.raises(ValueError, match="instruction is empty"):
        tiny_model.predict_action(np.zeros((8, 8, 3), np.uint8), "   ")
    with pytest.raises(ValueError, match="instruction is too long"):
        tiny_model.predict_action(np.zeros((8, 8, 3), np.uint8), "go " * 500)
    with pytest.raises(ValueError, match="2 images for 1 instructions"):
        tiny_model.predict_action([np.zeros((8, 8, 3), np.uint8)] * 2, ["wave"])


def test_unnorm_key_errors_list_the_available_keys(tiny_model):
    from tests.conftest import TINY_NORM_STATS, make_tiny_model

    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(NormalizationError, match="unknown unnorm_key 'bridge'; available keys: synthetic"):
        tiny_model.predict_action(image, "wave", unnorm_key="bridge")
    two = make_tiny_model(norm_stats={"a": TINY_NORM_STATS["synthetic"], "b": TINY_NORM_STATS["synthetic"]})
    with pytest.raises(NormalizationError, match="trained on 2 datasets; pass unnorm_key=... with one of: a, b"):
        two.predict_action(image, "wave")
    assert two.predict_action(image, "wave", unnorm_key="b").shape == (7,)
