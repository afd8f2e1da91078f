"""Train or fine-tune OpenVLA: full, frozen-vision, LoRA or QLoRA; one process or torchrun; resumable.

    vlaforge train --preset tiny                                    # tiny model, synthetic data, CPU, ~1 min
    vlaforge train --preset tiny-lora --max-steps 100 --lora.rank 16
    vlaforge train --model tiny --data.datasets data/mt10 --data.cameras corner --output-dir runs/mt10
    vlaforge train --model checkpoints/openvla-7b --mode lora --data.datasets data/my_robot --precision bf16
    vlaforge train --config runs/tiny/train_config.json --resume     # continue a run exactly where it stopped
    torchrun --nproc_per_node 2 -m vlaforge.cli.main train --preset tiny --strategy ddp

Start from a preset (--preset NAME) or a saved config (--config FILE); every field below overrides it.
"""

from __future__ import annotations

import argparse
import os

import tyro

from vlaforge.train.config import TRAIN_PRESETS, TrainConfig, get_train_preset


def parse_config(argv: list[str]) -> TrainConfig:
    """`--preset` / `--config` pick the starting values; tyro parses the field overrides on top of them."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    if known.preset and known.config:
        raise ValueError("give either --preset or --config, not both")
    if known.config:
        base = TrainConfig.load(known.config)
    else:
        base = get_train_preset(known.preset) if known.preset else TrainConfig()
    description = f"{__doc__}\npresets: {', '.join(TRAIN_PRESETS)}"
    return tyro.cli(TrainConfig, args=rest, default=base, prog="vlaforge train", description=description)


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge train`."""
    from vlaforge.train.loop import train

    result = train(parse_config(argv))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {result.step} steps; final checkpoint: {result.checkpoint}")
    return 0
