"""The training loop: one code path for full training, frozen vision, LoRA and QLoRA, on 1 or N processes.

```
train(cfg)
  check_inputs        config, paths, dataset/model compatibility: every user error before any work
  build_run           data -> model (+ adapters, trainable flags) -> DDP/FSDP -> AdamW + schedule -> resume
  for step:           train_step: grad-accumulated forward/backward under autocast, clip, AdamW, schedule
      log             loss + the model's metrics, averaged over steps and ranks
      save            atomic checkpoint (OpenVLA.from_pretrained format + optimizer, RNG, data position)
      evaluate        optionally, the saved checkpoint in simulation
```

The loop never looks inside the model: it passes every tensor of the batch that `forward` accepts
(`input_ids`, `pixel_values`, `labels`, `proprio`, `action_chunk`, ...) and logs whatever `metrics` the
forward returns, so new action heads train without changes here.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlaforge.config import ConfigError
from vlaforge.train import checkpoint as ckpt
from vlaforge.train.config import TRAIN_CONFIG_NAME, TrainConfig
from vlaforge.train.data import StepSampler, TrainData, build_loader, check_action_dim, check_dataset_paths, open_data
from vlaforge.train.distributed import (
    DistInfo,
    barrier,
    full_model_state,
    gradient_sync,
    init_distributed,
    load_optimizer_state,
    mean_across_ranks,
    optimizer_state,
    shutdown,
    unwrap,
    wrap_model,
)
from vlaforge.train.metrics import MetricLogger, RunningMean
from vlaforge.train.model import (
    base_checkpoint_for,
    build_model,
    parameter_counts,
    peek_model_config,
    save_fresh_base,
    use_bf16,
)
from vlaforge.train.optim import build_optimizer, build_scheduler

log = logging.getLogger("vlaforge.train")


@dataclass
class TrainResult:
    """What `train` returns."""

    output_dir: Path  # the run directory
    checkpoint: Path  # the final checkpoint (an OpenVLA.from_pretrained directory)
    step: int  # optimizer steps done
    metrics: dict[str, float]  # the last logged averages (loss, action_accuracy, l1, lr, ...)


@dataclass
class Run:
    """Everything a run holds while it trains."""

    cfg: TrainConfig
    dist: DistInfo
    data: TrainData
    model: torch.nn.Module  # what is called: the OpenVLA, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: StepSampler
    batches: Iterator[dict[str, Any]]
    start_step: int
    forward_keys: frozenset[str]  # batch keys the model's forward accepts
    autocast: bool  # bf16 autocast on

    @property
    def module(self) -> torch.nn.Module:
        """The OpenVLA itself."""
        return unwrap(self.model)


# ------------------------------------------------------------------------------------------- checks
def check_inputs(cfg: TrainConfig) -> None:
    """Every check that needs no model: raises a ConfigError/FileNotFoundError with guidance."""
    check_dataset_paths(cfg)
    peek_model_config(cfg)  # raises for a model that is neither a preset nor a checkpoint directory
    if cfg.mode == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("mode 'qlora' needs bitsandbytes: pip install 'vlaforge[quant]'")
    if cfg.wandb and importlib.util.find_spec("wandb") is None:
        raise ConfigError("--wandb needs the wandb package: pip install wandb (or leave W&B off)")
    if cfg.sim_eval.every:
        from vlaforge.sim.suites import get_suite, resolve_tasks

        resolve_tasks(get_suite(cfg.sim_eval.suite), cfg.sim_eval.tasks)  # unknown suite/task: lists valid ones
    if cfg.resume and ckpt.latest_checkpoint(cfg.output_dir) is None:
        log.warning("--resume: no complete checkpoint in %s yet; starting from step 0", cfg.output_dir)


def configure_process(cfg: TrainConfig, dist: DistInfo) -> None:
    """Threads and seeds (the same seed on every rank: replicas must start identical)."""
    threads = cfg.num_threads or (1 if dist.world_size > 1 and dist.device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if not logging.getLogger().handlers and dist.is_main:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


# ------------------------------------------------------------------------------------------- build
def build_run(cfg: TrainConfig, dist: DistInfo) -> Run:
    """Data, model, wrapper, optimizer, schedule, and the resumed state when continuing a run."""
    configure_process(cfg, dist)
    model_config = peek_model_config(cfg)
    data = open_data(cfg, chunk=model_config.action_chunk)
    check_action_dim(model_config, data)  # before loading any weights or writing anything
    output = Path(cfg.output_dir)
    resume_dir = ckpt.latest_checkpoint(output) if cfg.resume else None
    global_batch = cfg.batch_size * cfg.grad_accumulation * dist.world_size
    state = ckpt.check_resumable(resume_dir, cfg, global_batch, dist.world_size, dist.strategy) if resume_dir else None
    start_step = int(state["step"]) if state else 0
    sampler = StepSampler(
        len(data.dataset), cfg.batch_size, cfg.grad_accumulation, dist.world_size, dist.rank,
        cfg.seed, cfg.data.shuffle, start_step, cfg.max_steps,
    )  # fmt: skip
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
        for partial in ckpt.remove_partial(output):
            log.warning("removed the unfinished checkpoint %s (the run was stopped while saving)", partial)
        save_fresh_base(cfg, data)
    barrier(dist)
    model = build_model(cfg, data, resume_dir)
    data.bind(model.processor, model.config)
    bf16 = use_bf16(cfg.precision)
    wrapped = wrap_model(model, dist, bf16)
    optimizer = build_optimizer(wrapped, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.max_steps)
    batches = iter(build_loader(data, sampler, cfg.data.num_workers))  # draws a seed: before the RNG restore
    if state is not None:
        restore_state(wrapped, optimizer, scheduler, resume_dir, state, dist)
    keys = frozenset(inspect.signature(model.forward).parameters) - {"self", "use_cache"}
    return Run(cfg, dist, data, wrapped, optimizer, scheduler, sampler, batches, start_step, keys, bf16)


def restore_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, directory: Path,
    state: dict[str, Any], dist: DistInfo,
) -> None:  # fmt: skip
    """Loads the optimizer, scheduler and RNG states of a checkpoint (the data position is its step)."""
    name = f"optimizer-rank{dist.rank}.pt" if state["strategy"] == "fsdp" else "optimizer.pt"
    load_optimizer_state(model, optimizer, torch.load(directory / name, weights_only=True))
    scheduler.load_state_dict(state["scheduler"])
    ckpt.load_rng(directory, dist.rank)
    log.info("resumed from %s at step %d", directory, state["step"])


def log_startup(run: Run) -> None:
    """The loud startup log: config, data, parameter counts per module, first-batch shapes (rank 0)."""
    if not run.dist.is_main:
        return
    cfg, dist = run.cfg, run.dist
    log.info("training config:\n%s", json.dumps(cfg.to_dict(), indent=2))
    log.info(
        "mode %s | %s on %d process(es), device %s | precision %s | global batch %d (%d x %d accum x %d) | "
        "%d samples, %d steps/epoch | steps %d -> %d",
        cfg.mode, dist.strategy, dist.world_size, dist.device, "bf16 autocast" if run.autocast else "fp32",
        run.sampler.global_batch, cfg.batch_size, cfg.grad_accumulation, dist.world_size, len(run.data.dataset),
        run.sampler.steps_per_epoch, run.start_step, cfg.max_steps,
    )  # fmt: skip
    counts = parameter_counts(run.module)
    lines = [f"  {name:<20} trainable {t:>14,}   frozen {f:>14,}" for name, (t, f) in counts.items()]
    log.info("parameters:\n%s", "\n".join(lines))
    log.info("datasets: %s", ", ".join(sorted(run.data.statistics)))


# ------------------------------------------------------------------------------------------- step
def forward_inputs(batch: dict[str, Any], keys: frozenset[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors that `forward` takes, on the model's device."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in keys and isinstance(v, torch.Tensor)}


def train_step(run: Run, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
    """One optimizer step over `grad_accumulation` micro-batches; returns loss, model metrics, lr, grad norm."""
    run.model.train()
    means = RunningMean()
    for index, batch in enumerate(micro_batches):
        last = index == len(micro_batches) - 1
        with gradient_sync(run.model, run.dist, enabled=last):
            with torch.autocast(run.dist.device.type, dtype=torch.bfloat16, enabled=run.autocast):
                out = run.model(**forward_inputs(batch, run.forward_keys, run.dist.device))
            if out.loss is None:
                raise ValueError("the model returned no loss: the batch has no targets (labels or action_chunk)")
            (out.loss / len(micro_batches)).backward()
        means.add({"loss": float(out.loss.detach()), **out.metrics})
    metrics = means.pop()
    params = [p for p in run.model.parameters() if p.requires_grad]
    if run.cfg.optim.max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, run.cfg.optim.max_grad_norm)
        metrics["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    metrics["lr"] = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return metrics


# ------------------------------------------------------------------------------------------- save
def save(run: Run, step: int) -> Path:
    """Writes checkpoint `step` atomically (all ranks take part); returns its final directory."""
    cfg, dist = run.cfg, run.dist
    tmp = ckpt.partial_dir(cfg.output_dir, step)
    if dist.is_main:
        ckpt.begin(cfg.output_dir, step)
    barrier(dist)
    state = full_model_state(run.model, dist)  # collective under FSDP
    sharded = dist.strategy == "fsdp"
    optim = optimizer_state(run.model, run.optimizer) if sharded or dist.is_main else None  # FSDP: every rank's shard
    if sharded:
        torch.save(optim, tmp / f"optimizer-rank{dist.rank}.pt")
    ckpt.save_rng(tmp, dist.rank)
    if dist.is_main:
        write_model(run, state, tmp)
        if not sharded:
            torch.save(optim, tmp / "optimizer.pt")
        trainer_state = {
            "step": step, "scheduler": run.scheduler.state_dict(), "global_batch": run.sampler.global_batch,
            "world_size": dist.world_size, "strategy": dist.strategy, "data_position": {"consumed_steps": step},
        }  # fmt: skip
        torch.save(trainer_state, tmp / ckpt.STATE_NAME)
    barrier(dist)
    final = ckpt.checkpoint_dir(cfg.output_dir, step)
    if dist.is_main:
        ckpt.commit(tmp)
        for old in ckpt.prune(cfg.output_dir, cfg.keep_last):
            log.info("deleted old checkpoint %s (keep_last=%d)", old.name, cfg.keep_last)
        log.info("saved checkpoint %s", final)
    barrier(dist)
    return final


def write_model(run: Run, state: dict[str, torch.Tensor], directory: Path) -> None:
    """Rank 0: the model files (merged for LoRA), the adapter, and the config into a checkpoint directory."""
    from vlaforge.model.lora import merge_lora, plain_model, save_adapter

    module, cfg = run.module, run.cfg
    if cfg.uses_lora:
        if run.dist.strategy == "fsdp":  # rebuild an unsharded copy from the gathered state
            module = rebuild_lora_copy(module, state)
        merged = merge_lora(module)
        merged.save_pretrained(directory)
        quantized = cfg.lora.quant_type if cfg.mode == "qlora" else None
        base = str(base_checkpoint_for(cfg).resolve())
        save_adapter(module, directory / ckpt.ADAPTER_DIR, base=base, quantized=quantized)
    elif run.dist.strategy == "fsdp":
        plain_model(module.config, state, module.processor).save_pretrained(directory)
    else:
        module.save_pretrained(directory)
    run.cfg.save(directory / TRAIN_CONFIG_NAME)


def rebuild_lora_copy(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """An unsharded CPU copy of an FSDP-sharded LoRA model, from its gathered full state dict."""
    from accelerate import init_empty_weights

    from vlaforge.model.lora import apply_lora
    from vlaforge.model.vla import OpenVLA

    with init_empty_weights(include_buffers=False):
        copy = OpenVLA(module.config)
    copy = apply_lora(copy, module._lora_config)  # noqa: SLF001
    copy.load_state_dict(state, strict=True, assign=True)
    copy.processor = module.processor
    return copy


# ------------------------------------------------------------------------------------------- evaluate
def evaluate_in_sim(run: Run, checkpoint: Path, step: int, metric_logger: MetricLogger) -> None:
    """Rank 0: evaluates a saved checkpoint in simulation; failures are logged, never fatal to training."""
    if not run.dist.is_main:
        return
    from vlaforge.sim.evaluate import EvalConfig, run_eval

    sim = run.cfg.sim_eval
    config = EvalConfig(
        suite=sim.suite, tasks=sim.tasks, episodes_per_task=sim.episodes, seed=sim.seed, max_steps=sim.max_steps,
        num_envs=sim.num_envs, num_workers=0, cameras=run.cfg.data.cameras,
        out=checkpoint / "eval", videos=False, progress=False,
    )  # fmt: skip
    try:
        report = run_eval(str(checkpoint), config)
    except Exception as err:  # noqa: BLE001 (the run goes on; the message says why the evaluation failed)
        log.warning("in-sim evaluation at step %d failed: %s", step, err)
        return
    values = {"success_rate": float(report["overall"]["success_rate"])}
    for task, stats in report.get("tasks", {}).items():
        if isinstance(stats, dict) and "success_rate" in stats:
            values[f"success_rate/{task}"] = float(stats["success_rate"])
    metric_logger.log_eval(step, values)
    log.info("step %d: in-sim success rate %.1f%% on %s", step, 100 * values["success_rate"], sim.suite)


# ------------------------------------------------------------------------------------------- loop
def run_training(run: Run) -> TrainResult:
    """The step loop: train, log every `log_every`, save every `save_every`, evaluate when asked."""
    cfg, dist = run.cfg, run.dist
    if dist.is_main:
        cfg.save(Path(cfg.output_dir) / TRAIN_CONFIG_NAME)
    metric_logger = MetricLogger(cfg, dist.is_main, run.start_step, run.sampler.global_batch)
    means, logged, last_saved = RunningMean(), {}, None
    try:
        for step in range(run.start_step + 1, cfg.max_steps + 1):
            means.add(train_step(run, [next(run.batches) for _ in range(cfg.grad_accumulation)]))
            metric_logger.advance()
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                logged = metric_logger.log(step, mean_across_ranks(dist, means.pop()))
            if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.max_steps:
                last_saved = save(run, step)
                if cfg.sim_eval.every and step % cfg.sim_eval.every == 0:
                    evaluate_in_sim(run, last_saved, step, metric_logger)
                metric_logger.reset_timer()
    finally:
        metric_logger.close()
    if last_saved is None:  # nothing left to train (resumed at max_steps)
        last_saved = ckpt.latest_checkpoint(cfg.output_dir) or save(run, run.start_step)
    return TrainResult(Path(cfg.output_dir), last_saved, cfg.max_steps, logged)


def train(cfg: TrainConfig) -> TrainResult:
    """Trains as `cfg` says; under torchrun, every process calls this with the same config.

    Returns:
        The run directory, the final checkpoint (loadable with `OpenVLA.from_pretrained`), the step count
        and the last logged metrics.

    Raises:
        ConfigError / FileNotFoundError: bad configuration, paths or data, before any training starts.
    """
    check_inputs(cfg)
    dist = init_distributed(cfg.strategy)
    try:
        run = build_run(cfg, dist)
        log_startup(run)
        return run_training(run)
    finally:
        shutdown(dist)
