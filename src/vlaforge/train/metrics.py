"""Training metrics: running averages, the progress bar, TensorBoard, metrics.jsonl and optional W&B.

Every optimizer step reports the loss, whatever metrics the model's forward returns (token heads:
`action_accuracy` and `l1`, the L1 error of the de-tokenized actions in normalized units; other heads
their own), the learning rate and the gradient norm. Every `log_every` steps the averages (over the
steps and over the ranks) go to every sink, prefixed `train/`. Only rank 0 writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlaforge.train.config import TrainConfig


class RunningMean:
    """Averages of named values since the last `pop`."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, float]) -> None:
        """Adds one observation of each value."""
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop(self) -> dict[str, float]:
        """The averages, and a reset."""
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return out


class MetricLogger:
    """Writes averaged metrics to the progress bar, TensorBoard, `metrics.jsonl` and W&B (rank 0 only).

    Args:
        cfg: the run's config (output_dir, log sinks, max_steps).
        enabled: False on ranks other than 0 (nothing is written or shown).
        start_step: the first step of this run (non-zero when resuming), for the progress bar.
        samples_per_step: global batch, for samples/s.
    """

    def __init__(self, cfg: TrainConfig, enabled: bool, start_step: int, samples_per_step: int) -> None:
        self.enabled, self.samples_per_step = enabled, samples_per_step
        self.path = Path(cfg.output_dir) / "metrics.jsonl"
        self.bar = tqdm(
            total=cfg.max_steps, initial=start_step, unit="step", dynamic_ncols=True, desc="train",
            disable=not (enabled and cfg.progress),
        )  # fmt: skip
        self.tensorboard = self.wandb = None
        if enabled and cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "tensorboard"), purge_step=start_step)
        if enabled and cfg.wandb:
            self.wandb = start_wandb(cfg)
        self.last_time, self.last_step = time.perf_counter(), start_step

    def log(self, step: int, values: dict[str, float]) -> dict[str, float]:
        """Logs the averages of the steps since the last call, with timing; returns what was logged."""
        now = time.perf_counter()
        elapsed_steps = max(1, step - self.last_step)
        values = dict(values)
        values["step_time_s"] = (now - self.last_time) / elapsed_steps
        values["samples_per_s"] = self.samples_per_step / values["step_time_s"]
        self.last_time, self.last_step = now, step
        if not self.enabled:
            return values
        self.bar.set_postfix({k: f"{values[k]:.4g}" for k in ("loss", "action_accuracy", "l1") if k in values})
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        return values

    def log_eval(self, step: int, values: dict[str, float]) -> None:
        """Logs evaluation results (e.g. in-sim success rates) under `eval/`."""
        if not self.enabled:
            return
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"eval/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"eval/{k}": v for k, v in values.items()}, step=step)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, "eval": values}) + "\n")

    def advance(self, steps: int = 1) -> None:
        """Moves the progress bar (its ETA comes from the measured step rate)."""
        self.bar.update(steps)

    def reset_timer(self) -> None:
        """Restarts the step timer (after a checkpoint or evaluation, so they do not count as step time)."""
        self.last_time = time.perf_counter()

    def close(self) -> None:
        """Flushes and closes every sink."""
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def start_wandb(cfg: TrainConfig) -> Any:
    """Starts a W&B run named after the output directory; a clear error when wandb is not installed."""
    try:
        import wandb
    except ImportError as err:
        raise ImportError("--wandb needs the wandb package: pip install wandb (or run without --wandb)") from err
    return wandb.init(project=cfg.wandb_project, name=Path(cfg.output_dir).name, config=cfg.to_dict())
