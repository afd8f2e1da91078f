"""Merge a LoRA adapter into its base model: a plain checkpoint whose outputs equal base + adapter.

    vlaforge merge-lora runs/tiny-lora/checkpoints/step-000020 --output merged/   # a training checkpoint
    vlaforge merge-lora path/to/adapter --base checkpoints/openvla-7b --output merged/

The result loads with `OpenVLA.from_pretrained` (and every vlaforge command) like any full checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro


@dataclass
class Args:
    """Write base + adapter as one plain checkpoint."""

    adapter: Annotated[str, tyro.conf.Positional]  # adapter directory, or a training checkpoint holding adapter/
    output: str  # directory for the merged checkpoint (created; must not hold a checkpoint already)
    base: str | None = None  # base checkpoint directory; default: the one recorded in the adapter


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge merge-lora`."""
    from vlaforge.model.lora import merge_adapter_dir

    args = tyro.cli(Args, args=argv, prog="vlaforge merge-lora", description=__doc__)
    output = Path(args.output)
    if (output / "config.json").exists():
        raise ValueError(f"{output} already holds a checkpoint; choose another --output directory")
    merged = merge_adapter_dir(args.adapter, args.base)
    merged.save_pretrained(output)
    n_params = sum(p.numel() for p in merged.parameters())
    print(f"merged {args.adapter} into {n_params:,} parameters; wrote {output}")
    return 0
