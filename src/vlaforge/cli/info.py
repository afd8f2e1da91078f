"""Print a checkpoint's or preset's config, parameter counts, tensor count and norm-stat keys.

vlaforge info openvla-7b            # a preset: built on the meta device, instant, allocates nothing
vlaforge info path/to/checkpoint    # a checkpoint directory (weights are not loaded)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

from vlaforge.config import PRESETS, VLAConfig, get_preset


@dataclass
class Args:
    """Inspect a model without loading its weights."""

    target: Annotated[str, tyro.conf.Positional]  # a preset name or a checkpoint directory
    json: bool = False  # print one JSON object instead of text


def resolve_config(target: str) -> tuple[VLAConfig, str]:
    """The config of a checkpoint directory or preset, and a label saying which it was."""
    from vlaforge.model.weights import read_config

    if Path(target).is_dir():
        return read_config(Path(target)), f"checkpoint {target}"
    if target in PRESETS or not Path(target).exists():
        return get_preset(target), f"preset {target}"
    raise ValueError(f"{target} is neither a preset ({', '.join(PRESETS)}) nor a checkpoint directory")


def summarize(config: VLAConfig) -> dict:
    """Parameter counts per component, the state-dict size and the statistics keys, from a meta-device model."""
    from vlaforge.model.vla import OpenVLA

    with torch.device("meta"):
        model = OpenVLA(config)
    counts: dict[str, int] = {}
    for name, child in model.named_children():
        if name == "vision_backbone":  # one line per tower
            for tower in ("featurizer", "fused_featurizer"):
                if getattr(child, tower) is not None:
                    counts[f"vision_backbone.{tower}"] = sum(p.numel() for p in getattr(child, tower).parameters())
        else:
            counts[name] = sum(p.numel() for p in child.parameters())
    return {
        "parameters": counts,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "state_dict_tensors": len(model.state_dict()),
        "norm_stat_keys": sorted(config.norm_stats or {}),
        "action_token_ids": [model.action_tokenizer.first_id, model.action_tokenizer.vocab_end - 1],
        "patches_per_image": model.vision_backbone.num_patches,
    }


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge info`."""
    args = tyro.cli(Args, args=argv, prog="vlaforge info", description=__doc__)
    config, label = resolve_config(args.target)
    summary = summarize(config)
    if args.json:
        print(json.dumps({"source": label, "config": config.to_dict(), **summary}, indent=2))
        return 0
    shown = {k: v for k, v in config.to_dict().items() if k != "norm_stats"}
    print(f"{label}\n\nconfig:\n{json.dumps(shown, indent=2)}\n\nparameters:")
    for name, count in summary["parameters"].items():
        print(f"  {name:<36} {count:>15,}")
    print(f"  {'total':<36} {summary['total_parameters']:>15,}")
    print(f"\nstate-dict tensors: {summary['state_dict_tensors']}")
    print(f"action token ids:   {summary['action_token_ids'][0]}..{summary['action_token_ids'][1]}")
    print(f"patches per image:  {summary['patches_per_image']}")
    keys = summary["norm_stat_keys"]
    print(f"norm-stat keys ({len(keys)}): {', '.join(keys) if keys else '(none)'}")
    return 0
