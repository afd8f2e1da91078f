"""The processor: image preprocessing equal to the original's, batching, padding and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlaforge.config import get_preset
from vlaforge.data.transforms import ImageTransform

# Per-tower normalization of openvla-7b's preprocessor_config (shared/docs/openvla-reference.md §3).
DINO_MEAN, DINO_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIGLIP_MEAN, SIGLIP_STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def reference_pixels(image: Image.Image) -> np.ndarray:
    """The original's processing, written independently: PIL bicubic to 224x224, /255, per-tower normalize."""
    resized = np.asarray(image.resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255.0  # [H, W, 3]
    dino = (resized - np.float32(DINO_MEAN)) / np.float32(DINO_STD)
    siglip = (resized - np.float32(SIGLIP_MEAN)) / np.float32(SIGLIP_STD)
    return np.concatenate([dino, siglip], axis=-1).transpose(2, 0, 1)  # [6, H, W]


def test_resize_naive_matches_the_original_processing():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8))
    ours = ImageTransform(get_preset("openvla-7b"))(image).numpy()
    np.testing.assert_allclose(ours, reference_pixels(image), atol=1e-6, rtol=0)


def test_letterbox_pads_with_the_tower_mean_colour():
    config = get_preset("tiny")
    config.image_resize_strategy = "letterbox"
    transform = ImageTransform(config)
    tall = Image.new("RGB", (100, 200), (255, 255, 255))
    pixels = transform(tall)  # [6, 224, 224]
    # The left edge is padding filled with int(mean*255): it normalizes to about 0 for both towers.
    assert pixels[:, :, 0].abs().max() < 0.02
    assert pixels[:, 112, 112].min() >= 1.0  # the white image itself (SigLIP: (1 - 0.5) / 0.5)


def test_batch_is_right_padded_with_a_mask(tiny_model):
    proc = tiny_model.processor
    batch = proc([np.zeros((10, 10, 3), np.uint8)] * 2, ["open", "open the top drawer slowly"])
    short, long = (proc.prompts.prompt_ids(t) for t in ("open", "open the top drawer slowly"))
    assert batch["input_ids"].shape == (2, len(long))
    assert batch["input_ids"][0, : len(short)].tolist() == short
    assert (batch["input_ids"][0, len(short) :] == proc.pad_token_id).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(short), len(long)]
    assert batch["pixel_values"].shape == (2, 6, 224, 224) and batch["pixel_values"].dtype == torch.float32


def test_wrong_image_inputs(tiny_model):
    proc = tiny_model.processor
    with pytest.raises(ValueError, match="uint8"):
        proc(np.zeros((4, 4, 3), np.int64), "go")
    with pytest.raises(ValueError, match="PIL.Image or a numpy uint8 array"):
        proc("picture.png", "go")
    with pytest.raises(ValueError, match="empty batch"):
        proc([], [])


def test_tokenizer_from_another_model_is_refused(tiny_model):
    from vlaforge.config import ConfigError
    from vlaforge.data.processor import VLAProcessor
    from vlaforge.data.tokenizer import build_tokenizer

    with pytest.raises(ConfigError, match="different models"):
        VLAProcessor(build_tokenizer(["a b c"] * 3, n_merges=5), tiny_model.config)
