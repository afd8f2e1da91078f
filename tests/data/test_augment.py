import numpy as np
import pytest
import torch

from tests.data.synthetic import memory_dataset, smooth_frames
from vlaforge.config import get_preset
from vlaforge.data.augment import AugmentConfig, ImageAugmentation
from vlaforge.data.batches import SampleBuilder, VLADataConfig, VLAFrameDataset, compute_statistics
from vlaforge.data.processor import VLAProcessor
from vlaforge.data.tokenizer import build_tokenizer
from vlaforge.data.transforms import ImageTransform

NEUTRAL = AugmentConfig(crop_scale=1.0, brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)


def image(seed=0, size=64):
    return smooth_frames(1, size, seed)[0]


def test_neutral_ranges_are_the_identity_and_random_ranges_change_the_image():
    img = image()
    np.testing.assert_array_equal(ImageAugmentation(NEUTRAL)(img), img)
    out = ImageAugmentation()(img, np.random.default_rng(0))
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - img).mean() > 1.0


def test_same_seed_same_result_other_seed_other_result():
    aug, img = ImageAugmentation(), image(1)
    a = aug(img, np.random.default_rng(5))
    np.testing.assert_array_equal(a, aug(img, np.random.default_rng(5)))
    assert not np.array_equal(a, aug(img, np.random.default_rng(6)))


def test_brightness_adds_the_drawn_delta():
    img = image(2)
    out = ImageAugmentation(AugmentConfig(1.0, 0.2, (1.0, 1.0), (1.0, 1.0), 0.0))(img, np.random.default_rng(3))
    delta = np.random.default_rng(3).uniform(-0.2, 0.2)  # the first draw when nothing is cropped
    expected = np.clip(img / 255.0 + delta, 0, 1) * 255.0
    assert np.abs(out - expected).max() <= 1.0


def test_saturation_and_hue_keep_gray_pixels_gray():
    gray = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 3, axis=2).repeat(8, axis=0)
    config = AugmentConfig(crop_scale=1.0, brightness=0.0, contrast=(1.0, 1.0), saturation=(0.5, 1.5), hue=0.05)
    out = ImageAugmentation(config)(np.ascontiguousarray(gray), np.random.default_rng(0))
    assert np.abs(out.astype(int) - gray).max() <= 1


def test_crop_zooms_into_the_image():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = 255  # left half white
    config = AugmentConfig(crop_scale=0.5, brightness=0.0, contrast=(1.0, 1.0), saturation=(1.0, 1.0), hue=0.0)
    out = ImageAugmentation(config)(img, np.random.default_rng(1))
    assert out.shape == img.shape
    edge = np.flatnonzero(np.abs(np.diff(out[50, :, 0].astype(int))) > 100)
    assert len(edge) == 1 and edge[0] != 49  # the edge moved: the image was cropped and scaled up


def test_eval_samples_use_exactly_the_inference_transform():
    """No train/serve skew: eval samples == ImageTransform == what VLAProcessor feeds the model at inference."""
    config, tokenizer = get_preset("tiny"), build_tokenizer()
    ds = memory_dataset("skew", lengths=(3,), size=32)
    statistics = compute_statistics([ds], progress=False)
    frames = VLAFrameDataset([ds], SampleBuilder(tokenizer, config, statistics, VLADataConfig(), train=False))
    sample = frames[1]
    raw = ds.episode(0).frames("main")[1]
    torch.testing.assert_close(sample["pixel_values"], ImageTransform(config)(raw), rtol=0, atol=0)
    served = VLAProcessor(tokenizer, config)(raw, ds.episode(0).task)["pixel_values"][0]
    torch.testing.assert_close(sample["pixel_values"], served, rtol=0, atol=0)
    trained = VLAFrameDataset([ds], SampleBuilder(tokenizer, config, statistics, VLADataConfig(), train=True))[1]
    assert not torch.equal(trained["pixel_values"], sample["pixel_values"])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        ImageAugmentation()(np.zeros((8, 8, 3), np.float32))
