"""Checkpoints: the model in `OpenVLA.from_pretrained` format plus everything needed to resume exactly.

    output_dir/
      train_config.json                  the run's resolved config
      base/                              LoRA runs from a preset: the frozen base model
      checkpoints/step-000500/
        config.json  model.safetensors  dataset_statistics.json  tokenizer files   (OpenVLA.from_pretrained)
        adapter/                         LoRA runs: adapter_config.json, adapter_model.safetensors (peft)
        train_config.json                the config this checkpoint was trained with
        trainer_state.pt                 step, scheduler, data position, world size
        optimizer.pt | optimizer-rank{r}.pt    AdamW state (per rank under FSDP: its shards)
        rng-rank{r}.pt                   python / numpy / torch RNG states of each rank

For LoRA runs the model files hold the merged weights (base + adapter), so every checkpoint loads and
evaluates like a fully trained one; `vlaforge merge-lora` does the same merge offline from an adapter.

Saving is atomic: everything is written into `step-N.tmp/`, then the directory is renamed. A run killed
mid-save leaves only a `.tmp` directory, which is ignored and removed by the next run. After a checkpoint
is complete, all but the newest `keep_last` are deleted.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.config import ConfigError
from vlaforge.train.config import TRAIN_CONFIG_NAME, TrainConfig

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "trainer_state.pt"
ADAPTER_DIR = "adapter"
TMP_SUFFIX = ".tmp"

# Fields a resumed run may change: they do not alter the trajectory of the weights.
RESUMABLE_CHANGES = {
    "max_steps", "resume", "save_every", "keep_last", "log_every", "progress", "tensorboard", "wandb",
    "wandb_project", "num_threads", "sim_eval", "batch_size", "grad_accumulation", "strategy", "output_dir",
}  # fmt: skip
RESUMABLE_NESTED = {"data.num_workers", "optim.decay_steps"}  # decay_steps: compared as the effective horizon


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    """`output_dir/checkpoints/step-000123`."""
    return Path(output_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed, with a trainer state), oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        if path.name.endswith(TMP_SUFFIX) or not (path / STATE_NAME).is_file():
            continue
        try:
            found.append((int(path.name.removeprefix("step-")), path))
        except ValueError:
            continue
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Deletes `.tmp` directories left by a run killed while saving; returns them."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    partial = [p for p in root.glob(f"*{TMP_SUFFIX}")] if root.is_dir() else []
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def prune(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Deletes all but the newest `keep_last` complete checkpoints; returns the deleted ones."""
    doomed = [path for _, path in list_checkpoints(output_dir)[:-keep_last]]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def partial_dir(output_dir: str | Path, step: int) -> Path:
    """`output_dir/checkpoints/step-000123.tmp`: where checkpoint `step` is written before its rename."""
    return checkpoint_dir(output_dir, step).with_name(f"step-{step:06d}{TMP_SUFFIX}")


def begin(output_dir: str | Path, step: int) -> Path:
    """Creates the empty `.tmp` directory a checkpoint is written into (rank 0, before the others write)."""
    tmp = partial_dir(output_dir, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path) -> Path:
    """Renames a fully written `.tmp` checkpoint to its final name (replacing one of the same step)."""
    final = tmp.with_name(tmp.name.removesuffix(TMP_SUFFIX))
    if final.exists():
        shutil.rmtree(final)
    for file in tmp.rglob("*"):  # make the data durable before the rename makes it visible
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    os.replace(tmp, final)
    return final


# ------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch RNG states (tensor/list form: loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores `rng_state()`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(directory: Path, rank: int) -> None:
    """Writes this rank's RNG states into a checkpoint being written."""
    torch.save(rng_state(), directory / f"rng-rank{rank}.pt")


def load_rng(directory: Path, rank: int) -> None:
    """Restores this rank's RNG states (rank 0's when the checkpoint came from fewer processes)."""
    path = directory / f"rng-rank{rank}.pt"
    set_rng_state(torch.load(path if path.is_file() else directory / "rng-rank0.pt", weights_only=True))


# ------------------------------------------------------------------------------------------- config
def config_differences(saved: TrainConfig, current: TrainConfig) -> list[str]:
    """Fields that differ between a checkpoint's config and the resuming run's, except harmless ones."""
    old, new = saved.to_dict(), current.to_dict()
    diffs = []
    for key in sorted(set(old) | set(new)):
        if key in RESUMABLE_CHANGES:
            continue
        if isinstance(old.get(key), dict) and isinstance(new.get(key), dict):
            for sub in sorted(set(old[key]) | set(new[key])):
                name = f"{key}.{sub}"
                if name not in RESUMABLE_NESTED and old[key].get(sub) != new[key].get(sub):
                    diffs.append(f"{name}: {old[key].get(sub)!r} -> {new[key].get(sub)!r}")
        elif old.get(key) != new.get(key):
            diffs.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return diffs


def check_resumable(
    directory: Path, current: TrainConfig, global_batch: int, world_size: int, strategy: str
) -> dict[str, Any]:
    """Reads a checkpoint's trainer state and raises ConfigError if the run cannot continue it exactly.

    Args:
        directory: the checkpoint.
        current: the resuming run's config.
        global_batch: the resuming run's samples per optimizer step (must be the checkpoint's).
        world_size: the resuming run's processes.
        strategy: the resuming run's resolved strategy (none, ddp, fsdp).
    """
    saved = TrainConfig.load(directory / TRAIN_CONFIG_NAME)
    diffs = config_differences(saved, current)
    if diffs:
        raise ConfigError(
            f"cannot resume from {directory}: the config changed in ways that alter training: {'; '.join(diffs)}. "
            "Resume with the checkpoint's settings, or start a new run in another output_dir"
        )
    horizon = saved.optim.decay_steps or saved.max_steps
    if saved.optim.schedule == "cosine" and (current.optim.decay_steps or current.max_steps) != horizon:
        raise ConfigError(
            f"cannot resume from {directory}: its cosine schedule decays until step {horizon} and this run's until "
            f"{current.optim.decay_steps or current.max_steps}. Pass --optim.decay-steps {horizon} to keep the "
            "schedule (steps past it train at the final learning rate)"
        )
    state = torch.load(directory / STATE_NAME, weights_only=True)
    if state["global_batch"] != global_batch:
        raise ConfigError(
            f"cannot resume from {directory}: it was trained with a global batch of {state['global_batch']} samples "
            f"(batch_size x grad_accumulation x processes) but this run has {global_batch}"
        )
    if state["strategy"] == "fsdp" and (strategy, world_size) != ("fsdp", state["world_size"]):
        raise ConfigError(
            f"{directory} holds FSDP optimizer shards of {state['world_size']} processes; resume with strategy "
            f"fsdp on {state['world_size']} processes"
        )
    if current.max_steps < state["step"]:
        raise ConfigError(f"max_steps={current.max_steps} is below the checkpoint's step {state['step']}")
    return state


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Writes JSON atomically (write, then rename)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
