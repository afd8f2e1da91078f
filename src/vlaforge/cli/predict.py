"""Predict one action from a checkpoint, an image file and an instruction.

    vlaforge predict path/to/checkpoint frame.png "put the eggplant in the bowl" --unnorm-key bridge_orig
    vlaforge predict path/to/checkpoint frame.png "open the drawer" --quant int8   # int8 decoder: fast on CPUs

Prints one JSON line: the unnormalized action, the latency of `predict_action` and the quantization mode.
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

from vlaforge.infer.quant_modes import QuantMode


@dataclass
class Args:
    """Run `predict_action` once and print the unnormalized action."""

    checkpoint: Annotated[Path, tyro.conf.Positional]  # checkpoint directory (config.json + safetensors)
    image: Annotated[Path, tyro.conf.Positional]  # image file (png, jpg, ...)
    instruction: Annotated[str, tyro.conf.Positional]  # what the robot should do
    unnorm_key: str | None = None  # dataset statistics to unnormalize with (optional with one dataset)
    dtype: Literal["float32", "bfloat16"] = "float32"  # weight dtype (with --quant: of the layers left float)
    quant: QuantMode = "fp32"  # quantization: fp32 (as saved), bf16, int8 (fastest on CPUs), bnb-int8, nf4


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge predict`."""
    from vlaforge.infer.quantize import load_for_inference

    args = tyro.cli(Args, args=argv, prog="vlaforge predict", description=__doc__)
    if not args.image.is_file():
        raise FileNotFoundError(f"image file {args.image} does not exist")
    try:
        image = Image.open(args.image).convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{args.image} is not a readable image: {err}") from err
    model = load_for_inference(args.checkpoint, args.quant, dtype=getattr(torch, args.dtype))
    if model.processor is None:
        raise ValueError(f"{args.checkpoint} has no tokenizer files; predict needs them to build the prompt")
    start = time.perf_counter()
    action = model.predict_action(image, args.instruction, unnorm_key=args.unnorm_key)
    elapsed_ms = (time.perf_counter() - start) * 1e3
    print(json.dumps({"action": action.tolist(), "latency_ms": round(elapsed_ms, 1), "quant": args.quant}))
    return 0
