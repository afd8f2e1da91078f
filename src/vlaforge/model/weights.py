"""Checkpoint directories in the released openvla-7b Hugging Face layout: read and write.

A checkpoint directory holds `config.json`, the weights as `model.safetensors` or as shards
`model-0000X-of-0000N.safetensors` listed in `model.safetensors.index.json`, `dataset_statistics.json`,
and (optionally) the tokenizer files. Only safetensors are read: no pickle.

Key names are the original's, so one table maps them onto the modules. The only rename: OpenVLA patched
timm's LayerScale to store `gamma` as `scale_factor` (HF renames parameters containing "gamma").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from vlaforge.config import VLAConfig
from vlaforge.constants import CONFIG_NAME, STATS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME
from vlaforge.model.vla import OpenVLA

# (checkpoint key suffix, module key suffix): the key-mapping table between the released format and vlaforge.
KEY_RENAMES: list[tuple[str, str]] = [(".ls1.scale_factor", ".ls1.gamma"), (".ls2.scale_factor", ".ls2.gamma")]


class CheckpointError(ValueError):
    """A checkpoint directory is missing, incomplete, corrupt or does not fit the model."""


def _rename_suffix(key: str, pairs: list[tuple[str, str]]) -> str:
    for old, new in pairs:
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def to_module_key(key: str) -> str:
    """Checkpoint key -> vlaforge state-dict key."""
    return _rename_suffix(key, KEY_RENAMES)


def to_checkpoint_key(key: str) -> str:
    """vlaforge state-dict key -> checkpoint key (inverse of `to_module_key`)."""
    return _rename_suffix(key, [(module, ckpt) for ckpt, module in KEY_RENAMES])


# ------------------------------------------------------------------------------------------- reading
def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory, in shard order."""
    index = path / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index: {err}") from err
        files = [path / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index} lists shards that are not in {path}: {', '.join(missing)}")
        return files
    single = path / WEIGHTS_NAME
    if single.is_file():
        return [single]
    pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
    hint = f" It has {', '.join(pickled)}: pickle files are not loaded; convert them to safetensors." if pickled else ""
    raise CheckpointError(f"{path} has neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}.{hint}")


def iter_tensors(files: list[Path], dtype: torch.dtype | None) -> Iterator[tuple[str, str, torch.Tensor]]:
    """Yields (checkpoint key, file name, tensor) for every tensor of every file."""
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                    tensor = handle.get_tensor(key)
                    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                        tensor = tensor.to(dtype)
                    else:
                        # A fresh, aligned copy: tensors viewed in the file's buffer may sit at unaligned
                        # addresses, which makes CPU kernels round differently (1 ulp) than after save.
                        tensor = tensor.clone()
                    yield key, file.name, tensor
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{file} is not a readable safetensors file ({err}); re-download or re-save it"
            ) from err


def read_config(path: Path) -> VLAConfig:
    """config.json, with `dataset_statistics.json` (when present) taking precedence for norm_stats."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    config = VLAConfig.load(path / CONFIG_NAME)
    stats_file = path / STATS_NAME
    if stats_file.is_file():
        try:
            stats = json.loads(stats_file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{stats_file} is not valid JSON: {err}") from err
        config.norm_stats = {**(config.norm_stats or {}), **stats}
    return config


def check_state_dict(expected: dict[str, torch.Size], found: dict[str, tuple[str, torch.Size]], path: Path) -> None:
    """Raises CheckpointError naming missing, unexpected and mis-shaped keys and their files."""
    problems = []
    missing = sorted(set(expected) - set(found))
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {', '.join(missing[:5])}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        shown = ", ".join(f"{k} (in {found[k][0]})" for k in unexpected[:5])
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {shown}")
    for key in sorted(set(expected) & set(found)):
        file, shape = found[key]
        if tuple(shape) != tuple(expected[key]):
            problems.append(f"{key} in {file} has shape {list(shape)}, the config expects {list(expected[key])}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not match its config.json: " + "; ".join(problems[:8])
            + ". Is config.json from the same checkpoint (see `timm_model_kwargs` for small towers)?"
        )  # fmt: skip


def load_pretrained(path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> OpenVLA:
    """Builds the model from config.json without allocating weights, then assigns the checkpoint's tensors.

    Args:
        path: checkpoint directory.
        dtype: cast floating-point weights to this dtype (default: keep the file's dtype).
        device: where the model ends up.
    """
    from vlaforge.data.processor import VLAProcessor

    path = Path(path)
    config = read_config(path)
    with init_empty_weights(include_buffers=False):
        model = OpenVLA(config)
    expected = {to_checkpoint_key(k): v.shape for k, v in model.state_dict().items()}
    state, found = {}, {}
    for key, file, tensor in iter_tensors(weight_files(path), dtype):
        found[key] = (file, tensor.shape)
        state[to_module_key(key)] = tensor
    check_state_dict(expected, found, path)
    model.load_state_dict(state, strict=True, assign=True)
    model.to(device)
    if dtype is not None:
        model.to(dtype)  # buffers created at init (e.g. rotary frequencies stay fp32 inside HF modules)
    model.eval()
    if VLAProcessor.is_saved_in(path):
        model.processor = VLAProcessor.from_pretrained(path, config)
    return model


# ------------------------------------------------------------------------------------------- writing
def _atomic_write_text(file: Path, text: str) -> None:
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, file)


def shard_state_dict(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Splits a state dict into consecutive shards of at most `max_shard_bytes` (one tensor may exceed it)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def save_pretrained(model: OpenVLA, path: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
    """Writes the checkpoint directory: config.json, weights (sharded if large), statistics, tokenizer."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {to_checkpoint_key(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    for old in [path / WEIGHTS_NAME, path / WEIGHTS_INDEX_NAME, *path.glob("model-*-of-*.safetensors")]:
        old.unlink(missing_ok=True)
    shards = shard_state_dict(state, max_shard_bytes)
    if len(shards) == 1:
        save_file(state, str(path / (WEIGHTS_NAME + ".tmp")), metadata={"format": "pt"})
        os.replace(path / (WEIGHTS_NAME + ".tmp"), path / WEIGHTS_NAME)
    else:
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(path / name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in state.values())
        index: dict[str, Any] = {"metadata": {"total_size": total}, "weight_map": weight_map}
        _atomic_write_text(path / WEIGHTS_INDEX_NAME, json.dumps(index, indent=2))
    _atomic_write_text(path / CONFIG_NAME, json.dumps(model.config.to_dict(), indent=2) + "\n")
    if model.norm_stats:
        _atomic_write_text(path / STATS_NAME, json.dumps(model.norm_stats, indent=2) + "\n")
    if model.processor is not None:
        model.processor.save_pretrained(path)
