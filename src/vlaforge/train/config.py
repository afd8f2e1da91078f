"""Training configuration: typed dataclasses (every field documented), named presets, JSON round trip.

    cfg = get_train_preset("tiny-lora")          # a preset is a plain TrainConfig instance
    cfg.max_steps = 50
    train(cfg)                                   # vlaforge.train.loop.train

On the command line every field is a flag (`--optim.lr 1e-4`, `--lora.rank 16`), starting from a preset
(`--preset tiny-lora`) or from a saved file (`--config runs/x/train_config.json`). Each checkpoint carries
its `train_config.json`. A misspelled field fails with the closest valid name.

Modes (which parameters train is data, see `vlaforge.train.model.TRAINABLE`):

| mode            | trains                                               | as in the original                  |
|-----------------|------------------------------------------------------|-------------------------------------|
| `full`          | everything: vision towers, projector, LLM            | train.py `vla-full-train` (paper)   |
| `frozen-vision` | projector + LLM; the vision towers stay frozen        | train.py `vla-train` (the ablation) |
| `lora`          | LoRA adapters only (peft), base frozen               | finetune.py                         |
| `qlora`         | LoRA adapters on a 4-bit (bitsandbytes) frozen base  | finetune.py `--use_quantization`    |
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlaforge.config import ConfigError
from vlaforge.model.lora import LoRAConfig

Mode = Literal["full", "frozen-vision", "lora", "qlora"]
MODES: tuple[str, ...] = typing.get_args(Mode)
TRAIN_CONFIG_NAME = "train_config.json"


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule (linear warmup, then constant or cosine decay)."""

    lr: float = 5e-4  # peak learning rate (finetune.py: 5e-4 for LoRA; train.py: 2e-5 for full training)
    weight_decay: float = 0.01  # AdamW decay on matrices; biases and norms never decay (train.py)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas (torch defaults, as both original scripts)
    eps: float = 1e-8  # AdamW epsilon
    schedule: Literal["constant", "cosine"] = "constant"  # after warmup: constant (original) or cosine decay
    warmup_steps: int = 0  # optimizer steps of linear warmup from 0 to `lr`
    min_lr_ratio: float = 0.0  # cosine only: the final learning rate as a fraction of `lr`
    decay_steps: int | None = None  # cosine only: step at which the decay ends; None: max_steps
    max_grad_norm: float | None = None  # clip the global gradient norm to this; None: no clipping (finetune.py)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError("optim.weight_decay and optim.warmup_steps must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ConfigError(f"optim.decay_steps must be >= 1 or None (= max_steps), got {self.decay_steps}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"optim.max_grad_norm must be > 0 or None (no clipping), got {self.max_grad_norm}")


@dataclass
class SyntheticConfig:
    """The in-memory synthetic dataset used when no dataset path is given (tests, smoke runs, benchmarks)."""

    num_samples: int = 64  # samples in the dataset
    num_tasks: int = 4  # distinct instructions, each with its own mean action and image colour
    action_dim: int = 7  # A: action dimensions (7 = end-effector delta + gripper, as Open-X)
    image_size: int = 32  # side of the raw random images; the processor resizes them to the model's size
    noise: float = 0.1  # spread of the actions around each task's mean, as a fraction of the action range

    def __post_init__(self) -> None:
        if min(self.num_samples, self.num_tasks, self.action_dim, self.image_size) < 1:
            raise ConfigError("data.synthetic sizes (num_samples, num_tasks, action_dim, image_size) must be >= 1")


@dataclass
class DataConfig:
    """Where training samples come from."""

    datasets: tuple[str, ...] = ()  # LeRobot v3 dirs, HDF5 files or RLDS dirs (concatenated); empty: synthetic data
    cameras: tuple[str, ...] = ()  # cameras per step, the first is the main image (e.g. corner); empty: the first
    image_aug: bool = False  # random crop + colour jitter (finetune.py default True for real data)
    num_workers: int = 0  # DataLoader worker processes (0: load in the training process)
    shuffle: bool = True  # reshuffle every epoch (a fixed permutation per epoch and seed: resumable)
    tokenizer_merges: int = 0  # models from a preset: BPE merges learnt from the instructions (0: bytes only)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # used when `datasets` is empty

    def __post_init__(self) -> None:
        self.datasets = tuple(str(d) for d in self.datasets)
        self.cameras = tuple(self.cameras)
        if self.num_workers < 0 or self.tokenizer_merges < 0:
            raise ConfigError("data.num_workers and data.tokenizer_merges must be >= 0")


@dataclass
class SimEvalConfig:
    """Periodic evaluation in simulation through the eval harness (`vlaforge.sim`), on saved checkpoints."""

    every: int = 0  # evaluate every this many optimizer steps, on the checkpoint saved then; 0: never
    suite: str = "demo"  # task suite (vlaforge.sim.suites), e.g. "demo" or "mt10"
    tasks: tuple[str, ...] = ()  # evaluate only these tasks of the suite; empty: all of them
    max_steps: int | None = None  # episode step limit; None: the suite's
    episodes: int = 5  # episodes per task
    num_envs: int = 4  # environments stepped in parallel (one policy batch)
    seed: int = 1000  # initial-state seed of the evaluation episodes (held out from training seeds)

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        if self.every < 0 or self.episodes < 1 or self.num_envs < 1:
            raise ConfigError("sim_eval.every must be >= 0, sim_eval.episodes and sim_eval.num_envs >= 1")


@dataclass
class TrainConfig:
    """Everything `vlaforge train` needs; saved as `train_config.json` in the run and every checkpoint."""

    output_dir: str = "runs/vlaforge"  # run directory: checkpoints/, tensorboard/, metrics.jsonl, config
    model: str = "tiny"  # a model preset (fresh random weights, e.g. "tiny") or a checkpoint directory
    mode: Mode = "full"  # what trains: full | frozen-vision | lora | qlora (see the module docstring)
    seed: int = 7  # seeds weights of fresh models, LoRA init, data order (train.py default 7)
    max_steps: int = 1000  # optimizer steps to train for (the run ends there; resume continues up to it)
    batch_size: int = 8  # samples per device per forward pass (micro-batch)
    grad_accumulation: int = 1  # micro-batches per optimizer step; global batch = batch_size x this x devices
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # bf16 autocast; auto: bf16 on GPUs that support it
    strategy: Literal["auto", "none", "ddp", "fsdp"] = "auto"  # auto: ddp under torchrun, none otherwise
    gradient_checkpointing: bool = False  # recompute LLM activations in backward (less memory, ~30% slower)
    save_every: int = 500  # checkpoint every this many steps (and always at the end); 0: only at the end
    keep_last: int = 2  # checkpoints kept on disk; older ones are deleted after a new one is complete
    resume: bool = False  # continue from the newest checkpoint in output_dir (exactly: weights, optimizer, data)
    log_every: int = 10  # steps between logged averages (TensorBoard, metrics.jsonl, progress bar)
    progress: bool = True  # show the tqdm progress bar (rank 0)
    tensorboard: bool = True  # write TensorBoard events to output_dir/tensorboard
    wandb: bool = False  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "vlaforge"  # W&B project name
    num_threads: int | None = None  # torch CPU threads per process; None: torch's default (1 per rank under torchrun)
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # LoRA settings (modes lora and qlora)
    data: DataConfig = field(default_factory=DataConfig)  # datasets and loading
    sim_eval: SimEvalConfig = field(default_factory=SimEvalConfig)  # periodic in-sim evaluation

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for name in ("max_steps", "batch_size", "grad_accumulation", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.save_every < 0:
            raise ConfigError(f"save_every must be >= 0 (0: save only at the end), got {self.save_every}")
        if self.mode == "qlora" and self.strategy == "fsdp":
            raise ConfigError("mode 'qlora' cannot be sharded with FSDP (bitsandbytes 4-bit weights); use ddp")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1 or None, got {self.num_threads}")
        if not self.output_dir:
            raise ConfigError("output_dir is empty; name the run directory, e.g. runs/my-run")

    @property
    def uses_lora(self) -> bool:
        """True for the adapter modes (lora, qlora)."""
        return self.mode in ("lora", "qlora")

    # ------------------------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Builds a config from a dict; unknown fields raise a ConfigError naming the closest valid one."""
        return _from_dict(cls, raw, "")

    def save(self, path: str | Path) -> None:
        """Writes the config as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Reads a config written by `save` (a file, or a run/checkpoint directory holding train_config.json)."""
        path = Path(path)
        if path.is_dir():
            path = path / TRAIN_CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"no training config at {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(raw)


def _from_dict(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Recursive `from_dict` for nested config dataclasses, with "did you mean" for unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'the config'} must be a JSON object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in known]
    if unknown:
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, 1)
            parts.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
        raise ConfigError(f"unknown training config field(s): {', '.join(parts)}")
    values = {}
    for key, value in raw.items():
        kind = hints[key]
        values[key] = _from_dict(kind, value, f"{prefix}{key}.") if dataclasses.is_dataclass(kind) else value
    return cls(**values)


# ------------------------------------------------------------------------------------------- presets
def _tiny() -> TrainConfig:
    """The tiny model from scratch on synthetic data: the whole pipeline in seconds on a CPU."""
    return TrainConfig(
        output_dir="runs/tiny", model="tiny", max_steps=20, batch_size=4, save_every=10, log_every=5,
        optim=OptimConfig(lr=3e-4, warmup_steps=2),
    )  # fmt: skip


def _tiny_mode(mode: str) -> TrainConfig:
    config = _tiny()
    config.mode, config.output_dir = mode, f"runs/tiny-{mode}"
    if mode in ("lora", "qlora"):
        config.lora = LoRAConfig(rank=8)
        config.optim.lr = 5e-4
    return config


def _openvla_7b_lora() -> TrainConfig:
    """finetune.py's defaults: LoRA r=32 all-linear, lr 5e-4 constant, batch 16, no clipping, bf16, image aug."""
    return TrainConfig(
        output_dir="runs/openvla-7b-lora", model="checkpoints/openvla-7b", mode="lora", max_steps=200_000,
        batch_size=16, precision="bf16", save_every=5000, keep_last=1, data=DataConfig(image_aug=True),
    )  # fmt: skip


def _openvla_7b_qlora() -> TrainConfig:
    """`_openvla_7b_lora` on a 4-bit NF4 base (finetune.py `--use_quantization True`)."""
    config = _openvla_7b_lora()
    config.mode, config.output_dir = "qlora", "runs/openvla-7b-qlora"
    return config


def _openvla_7b_full() -> TrainConfig:
    """train.py's full training: lr 2e-5 constant, no decay, clip 1.0, FSDP, bf16, checkpointing, batch 32."""
    return TrainConfig(
        output_dir="runs/openvla-7b-full", model="checkpoints/openvla-7b", mode="full", max_steps=100_000,
        batch_size=32, precision="bf16", strategy="fsdp", gradient_checkpointing=True, save_every=2500, keep_last=2,
        optim=OptimConfig(lr=2e-5, weight_decay=0.0, max_grad_norm=1.0),
    )  # fmt: skip


def _mt10() -> TrainConfig:
    """Meta-World MT10 from scratch on the `demo` model: the `make demo` recipe on 10 tasks (docs/results.md).

    Data: `vlaforge sim demos --suite mt10 --episodes-per-task 100 --image-size 98 --out data/mt10`.
    """
    return TrainConfig(
        output_dir="runs/mt10", model="demo", mode="full", max_steps=2000, batch_size=64, precision="fp32",
        save_every=500, log_every=20, num_threads=2,
        optim=OptimConfig(lr=5e-4, warmup_steps=100, schedule="cosine", min_lr_ratio=0.1, max_grad_norm=1.0),
        data=DataConfig(datasets=("data/mt10",), cameras=("corner",), num_workers=1, tokenizer_merges=128),
        sim_eval=SimEvalConfig(every=0, suite="mt10", episodes=10, num_envs=10),
    )  # fmt: skip


TRAIN_PRESETS = {
    "tiny": _tiny,
    "tiny-frozen-vision": lambda: _tiny_mode("frozen-vision"),
    "tiny-lora": lambda: _tiny_mode("lora"),
    "tiny-qlora": lambda: _tiny_mode("qlora"),
    "openvla-7b-lora": _openvla_7b_lora,
    "openvla-7b-qlora": _openvla_7b_qlora,
    "openvla-7b-full": _openvla_7b_full,
    "mt10": _mt10,
}


def get_train_preset(name: str) -> TrainConfig:
    """A fresh copy of the named training preset; unknown names get a "did you mean" hint."""
    if name not in TRAIN_PRESETS:
        close = difflib.get_close_matches(name, TRAIN_PRESETS, 1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown training preset {name!r}; available: {', '.join(TRAIN_PRESETS)}.{hint}")
    return copy.deepcopy(TRAIN_PRESETS[name]())
