"""The main job: run the tiny VLA end to end (build, save, reload, predict) on a synthetic image.

vlaforge demo --out outputs/demo
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro
from PIL import Image


@dataclass
class Args:
    """End-to-end run of the tiny preset."""

    out: Path = Path("outputs/demo")  # where the checkpoint, image and report go
    seed: int = 0  # seed of the random initialization and the synthetic image


def synthetic_image(seed: int, size: int = 256) -> Image.Image:
    """A colourful test image: a gradient background with a red square at a seeded position."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([x, y, (x + y) // 2], axis=-1).astype(np.uint8)  # [H, W, 3]
    top, left = rng.integers(0, size - 48, size=2)
    img[top : top + 48, left : left + 48] = (220, 30, 30)
    return Image.fromarray(img)


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge demo`."""
    from vlaforge.config import get_preset
    from vlaforge.data.tokenizer import build_tokenizer
    from vlaforge.model.vla import OpenVLA

    args = tyro.cli(Args, args=argv, prog="vlaforge demo", description=__doc__)
    args.out.mkdir(parents=True, exist_ok=True)
    config = get_preset("tiny")
    config.norm_stats = {"synthetic": {"action": {"q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0],
                                                  "mask": [True] * 6 + [False]}}}  # fmt: skip
    start = time.perf_counter()
    model = OpenVLA.create(config, build_tokenizer(), seed=args.seed)
    checkpoint = args.out / "tiny-checkpoint"
    model.save_pretrained(checkpoint)
    reloaded = OpenVLA.from_pretrained(checkpoint)
    image = synthetic_image(args.seed)
    image.save(args.out / "synthetic.png")
    action = reloaded.predict_action(image, "Put the red block in the bowl")
    report = {
        "checkpoint": str(checkpoint),
        "parameters": sum(p.numel() for p in reloaded.parameters()),
        "action": action.tolist(),
        "seconds": round(time.perf_counter() - start, 2),
        "note": "random weights: this shows the pipeline runs end to end, not that it has learned anything",
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0
