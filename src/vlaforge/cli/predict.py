"""Predict one action from a checkpoint, an image file and an instruction.

vlaforge predict path/to/checkpoint frame.png "put the eggplant in the bowl" --unnorm-key bridge_orig
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro
from PIL import Image, UnidentifiedImageError


@dataclass
class Args:
    """Run `predict_action` once and print the unnormalized action."""

    checkpoint: Annotated[Path, tyro.conf.Positional]  # checkpoint directory (config.json + safetensors)
    image: Annotated[Path, tyro.conf.Positional]  # image file (png, jpg, ...)
    instruction: Annotated[str, tyro.conf.Positional]  # what the robot should do
    unnorm_key: str | None = None  # dataset statistics to unnormalize with (optional with one dataset)
    dtype: Literal["float32", "bfloat16"] = "float32"  # weight dtype on this machine


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge predict`."""
    from vlaforge.model.vla import OpenVLA

    args = tyro.cli(Args, args=argv, prog="vlaforge predict", description=__doc__)
    if not args.image.is_file():
        raise FileNotFoundError(f"image file {args.image} does not exist")
    try:
        image = Image.open(args.image).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{args.image} is not a readable image: {err}") from err
    model = OpenVLA.from_pretrained(args.checkpoint, dtype=getattr(torch, args.dtype))
    if model.processor is None:
        raise ValueError(f"{args.checkpoint} has no tokenizer files; predict needs them to build the prompt")
    start = time.perf_counter()
    action = model.predict_action(image, args.instruction, unnorm_key=args.unnorm_key)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(json.dumps({"action": action.tolist(), "latency_ms": round(elapsed_ms, 1)}))
    return 0
