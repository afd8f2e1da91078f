"""Training: one loop for full training, frozen vision, LoRA and QLoRA, on one process or many (torchrun).

    from vlaforge.train import TrainConfig, get_train_preset, train

    cfg = get_train_preset("tiny-lora")
    cfg.max_steps = 50
    result = train(cfg)          # TrainResult(output_dir, checkpoint, step, metrics)

Reading order: config.py (what can be set) -> loop.py (the loop) -> data.py, model.py, optim.py,
checkpoint.py, distributed.py, metrics.py (one concern each). docs/training.md is the user guide.
"""

from __future__ import annotations

from vlaforge.utils.lazy import lazy_getattr

_EXPORTS = {
    "train": "vlaforge.train.loop",
    "TrainResult": "vlaforge.train.loop",
    "TrainConfig": "vlaforge.train.config",
    "get_train_preset": "vlaforge.train.config",
    "TRAIN_PRESETS": "vlaforge.train.config",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
