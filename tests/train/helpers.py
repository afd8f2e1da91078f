"""Helpers for the trainer tests: the tiny model at 112 px and a fast training config.

At 112 px the towers see 64 patches instead of 256, which makes a training step ~5x faster on a CPU while
exercising the same code. It is registered as the model preset `tiny-112` while trainer tests run (the
fresh-model path; see conftest.py), and saved as a checkpoint directory for subprocess tests (torchrun,
kill/resume), which cannot see a preset registered in the test process.
"""

from __future__ import annotations

from vlaforge.config import VLAConfig, get_preset
from vlaforge.train.config import SyntheticConfig, TrainConfig, get_train_preset

SMALL_PRESET = "tiny-112"


def small_model_config() -> VLAConfig:
    """The `tiny` architecture at 112 px (64 patches per image)."""
    config = get_preset("tiny")
    config.image_sizes = [112, 112]
    return config


def fast_config(output_dir, **overrides) -> TrainConfig:
    """The `tiny` preset cut down to seconds: `tiny-112`, 8 synthetic samples, batch 2, no TensorBoard or bar.

    Nested fields are overridden with `__`: `fast_config(dir, optim__lr=1e-3)`.
    """
    cfg = get_train_preset("tiny")
    cfg.output_dir, cfg.model = str(output_dir), SMALL_PRESET
    cfg.batch_size, cfg.max_steps, cfg.save_every, cfg.log_every = 2, 2, 0, 1
    cfg.tensorboard, cfg.progress = False, False
    cfg.data.synthetic = SyntheticConfig(num_samples=8, num_tasks=2)
    for key, value in overrides.items():
        target = cfg
        *path, name = key.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, name, value)
    return cfg
