"""Data parallelism: one code path for a single process, DDP and FSDP2 (`fully_shard`), under torchrun.

    torchrun --nproc_per_node 8 -m vlaforge.cli.main train --preset openvla-7b-lora        # DDP (auto)
    torchrun --nproc_per_node 8 -m vlaforge.cli.main train --preset openvla-7b-full        # FSDP2

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT):
NCCL on GPUs, gloo on CPUs. FSDP2 shards every ViT block, every Llama decoder layer and then the root (the
original wraps the same units with FSDP1, which is not used here: it hangs on CPUs). Checkpoints are
written from full, unsharded weights gathered on rank 0; optimizer state is saved per rank under FSDP (its
shards) and once otherwise. Multi-node runs use the same command with torchrun's `--nnodes`,
`--node_rank` and `--rdzv_endpoint` (docs/training.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vlaforge.config import ConfigError

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 1800.0  # collective timeout: a crashed peer fails the others instead of hanging them


@dataclass
class DistInfo:
    """Where this process sits in the job."""

    rank: int  # global rank
    world_size: int  # number of processes
    local_rank: int  # rank on this node (selects the GPU)
    device: torch.device  # cuda:local_rank or cpu
    strategy: str  # resolved: "none", "ddp" or "fsdp"

    @property
    def is_main(self) -> bool:
        """True on rank 0, which writes checkpoints and logs."""
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        """True when a process group is running."""
        return dist.is_available() and dist.is_initialized()


def resolve_strategy(strategy: str, world_size: int) -> str:
    """`auto` -> ddp under torchrun with several processes, none otherwise; checks the combination."""
    if strategy == "auto":
        return "ddp" if world_size > 1 else "none"
    if strategy == "none" and world_size > 1:
        raise ConfigError(f"strategy 'none' cannot run on {world_size} processes; use ddp or fsdp (or auto)")
    if strategy in ("ddp", "fsdp") and "RANK" not in os.environ:
        raise ConfigError(f"strategy {strategy!r} runs under torchrun (e.g. torchrun --nproc_per_node 2 ...)")
    return strategy


def init_distributed(strategy: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Starts the process group when launched by torchrun; a no-op for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    strategy = resolve_strategy(strategy, world_size)
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if strategy != "none" and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, device, strategy)


def shutdown(info: DistInfo) -> None:
    """Destroys the process group (if this process started one)."""
    if info.initialized:
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Waits for every rank."""
    if info.initialized:
        dist.barrier()


def broadcast_object(info: DistInfo, value: Any) -> Any:
    """Rank 0's `value` on every rank."""
    if not info.initialized:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def mean_across_ranks(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Averages each metric over the ranks that reported it (keys may differ between ranks)."""
    if not info.initialized:
        return dict(values)
    gathered: list[dict[str, float]] = [{} for _ in range(info.world_size)]
    dist.all_gather_object(gathered, values)
    keys = sorted({k for g in gathered for k in g})
    return {k: sum(g[k] for g in gathered if k in g) / sum(k in g for g in gathered) for k in keys}


# ------------------------------------------------------------------------------------------- wrapping
def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards one by one: ViT blocks and LLM decoder layers (as the original's policy)."""
    units: list[nn.Module] = []
    for tower in model.vision_backbone.towers:
        units.extend(tower.blocks)
    units.extend(model.language_model.model.layers)
    return units


def wrap_model(model: nn.Module, info: DistInfo, bf16: bool) -> nn.Module:
    """Moves the model to its device and wraps it for the strategy; returns the module to call."""
    model.to(info.device)
    if info.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [info.local_rank] if info.device.type == "cuda" else None
        # find_unused_parameters: OpenVLA never uses the towers' last block, final norm and SigLIP's pool head.
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    if info.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
        kwargs = {"mp_policy": policy} if policy is not None else {}
        for unit in shard_units(model):
            fully_shard(unit, **kwargs)
        fully_shard(model, **kwargs)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The OpenVLA inside a DDP wrapper (FSDP2 shards in place, so its model is already the OpenVLA)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, info: DistInfo, enabled: bool) -> Iterator[None]:
    """Skips the gradient all-reduce on micro-batches that are not the last of an accumulation step."""
    if enabled or info.strategy == "none":
        yield
    elif info.strategy == "ddp":
        with model.no_sync():
            yield
    else:  # fsdp
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)


# ------------------------------------------------------------------------------------------- state
def full_model_state(model: nn.Module, info: DistInfo) -> dict[str, torch.Tensor] | None:
    """The unsharded state dict (keys of the OpenVLA) on rank 0, None elsewhere. All ranks must call it."""
    if info.strategy != "fsdp":
        return unwrap(model).state_dict() if info.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if info.is_main else None


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """This rank's optimizer state keyed by parameter name; FSDP shards become plain local tensors."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    state = get_optimizer_state_dict(model, optimizer)  # shares tensors (and dicts) with the live optimizer
    local = {
        name: {k: (v.to_local() if isinstance(v, DTensor) else v).detach().cpu().clone() if torch.is_tensor(v) else v
               for k, v in per_param.items()}
        for name, per_param in state["state"].items()
    }  # fmt: skip
    return {"state": local, "param_groups": [dict(group) for group in state["param_groups"]]}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Inverse of `optimizer_state` (same strategy and world size for FSDP: the shards must line up)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    from torch.distributed.tensor import DTensor

    params = dict(unwrap(model).named_parameters())
    saved = {name for group in state["param_groups"] for name in group["params"]}
    trainable = {name for name, p in params.items() if p.requires_grad}
    if saved != trainable:
        raise ValueError(
            f"the checkpoint's optimizer covers other parameters than this model trains: "
            f"{len(saved - trainable)} only saved (e.g. {sorted(saved - trainable)[:3]}), "
            f"{len(trainable - saved)} only trained now (e.g. {sorted(trainable - saved)[:3]})"
        )
    for name, per_param in state["state"].items():
        param = params.get(name)
        if not isinstance(param, DTensor):
            continue
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                per_param[key] = DTensor.from_local(
                    value.to(param.device), param.device_mesh, param.placements, run_check=False,
                    shape=param.shape, stride=param.stride(),
                )  # fmt: skip
    # strict=False: parameters the forward never uses (the towers' last block, SigLIP's pool head) have no
    # AdamW state in the checkpoint, exactly as in the uninterrupted run.
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(strict=False))
