"""AdamW over the trainable parameters, and the learning-rate schedule (linear warmup, constant or cosine).

Weight decay applies to matrices only; biases and norm weights (1-D parameters) never decay, as the
original's train.py groups them. With LoRA every trainable tensor is a matrix, so all of them decay,
as in finetune.py (torch's AdamW default of 0.01).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlaforge.train.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters: matrices (decayed) and 1-D tensors (not decayed)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters; check the training mode and LoRA targets")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW with the config's learning rate, betas, epsilon and decoupled weight decay."""
    groups = [g for g in parameter_groups(model, config.weight_decay) if g["params"]]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def lr_factor(step: int, config: OptimConfig, max_steps: int) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based).

    Warmup rises linearly to 1 over `warmup_steps` (step 0 already gets 1 / warmup_steps, so no step is
    wasted at lr 0); then "constant" stays at 1 and "cosine" decays to `min_lr_ratio` at `decay_steps` (default
    `max_steps`) and stays there.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    decay_steps = max(1, (config.decay_steps or max_steps) - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `lr_factor`; stepped once per optimizer step, saved with every checkpoint."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, max_steps))
