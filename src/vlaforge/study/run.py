"""Runs the study: record the demonstrations, train and evaluate every arm for every seed, write the report.

Resumable at every level: the demonstrations resume episode by episode, a training run from its last
checkpoint, and an arm whose `result.json` exists is not run again. Rerun the same command after an
interruption (or to add seeds) and only the missing work is done.

```
out/
  data/{demo,ml45-train,ml45-test}/     LeRobot v3 datasets of the scripted experts
  seed-<s>/<arm>/run/                   training run (checkpoints, metrics.jsonl, TensorBoard)
  seed-<s>/<arm>/eval/                  evaluation report, episodes.jsonl, videos
  seed-<s>/<arm>/result.json            what the table is made of
  report.md  report.json  success.png  training_curves.png
```
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.study.arms import PRETRAINED, Arm, arms_needed
from vlaforge.study.config import StudyConfig

CAMERA = "corner"  # the one camera every arm sees (as the demo)
EVAL_SEED = 7  # initial states of the evaluation episodes (held out: the demos use seeds 0..N-1)
SUITE_OF_DATA = {"demo": "demo", "ml45-train": "ml45-train", "ml45-test": "ml45-test"}


# ------------------------------------------------------------------------------------------- data
def record_data(cfg: StudyConfig, arms: list[Arm]) -> dict[str, Path]:
    """Records the scripted demonstrations the arms train on; returns `{dataset name: directory}`."""
    from vlaforge.sim.demos import DemoConfig, generate_demos

    episodes = {"demo": cfg.demo_episodes, "ml45-train": cfg.pretrain_episodes, "ml45-test": cfg.adapt_episodes}
    paths = {}
    for name in sorted({arm.data for arm in arms if arm.trains}):
        out = cfg.out / "data" / name
        tasks = cfg.pretrain_tasks if name == "ml45-train" else ()
        summary = generate_demos(
            DemoConfig(out=out, suite=SUITE_OF_DATA[name], tasks=tasks, episodes_per_task=episodes[name], seed=0,
                       image_size=cfg.image_size, cameras=(CAMERA,))
        )  # fmt: skip
        if summary.interrupted:
            raise KeyboardInterrupt("recording interrupted; rerun the same command to resume")
        print(f"demos {name}: {summary.total} episodes ({summary.dropped} failed expert episodes dropped)")
        paths[name] = out
    return paths


# ------------------------------------------------------------------------------------------- training
def train_config(cfg: StudyConfig, arm: Arm, seed: int, data: Path, model: str) -> Any:
    """The `TrainConfig` of one arm: the demo recipe with the arm's model, mode, data and step budget."""
    from vlaforge.model.lora import LoRAConfig
    from vlaforge.train.checkpoint import latest_checkpoint
    from vlaforge.train.config import DataConfig, OptimConfig, TrainConfig

    run_dir = arm_dir(cfg, seed, arm) / "run"
    steps = cfg.steps_for(arm.budget)
    return TrainConfig(
        output_dir=str(run_dir), model=model, mode=arm.mode, seed=seed, max_steps=steps,
        batch_size=cfg.batch_size, precision="fp32", save_every=max(steps // 4, 1), keep_last=1,
        log_every=max(min(steps // 50, 25), 1), num_threads=cfg.threads, progress=True,
        resume=latest_checkpoint(run_dir) is not None, lora=LoRAConfig(rank=cfg.lora_rank),
        optim=OptimConfig(lr=cfg.lr, warmup_steps=min(100, steps // 10), schedule="cosine", min_lr_ratio=0.1,
                          max_grad_norm=1.0),
        data=DataConfig(datasets=(str(data),), cameras=(CAMERA,), num_workers=1, tokenizer_merges=128),
    )  # fmt: skip


def train_arm(cfg: StudyConfig, arm: Arm, seed: int, data: dict[str, Path]) -> tuple[Path, float]:
    """Trains one arm (resuming a partial run); returns its final checkpoint and the training seconds."""
    from vlaforge.train.loop import train

    model = arm.model
    if model == PRETRAINED:
        model = str(final_checkpoint(cfg, seed, "pretrain"))
    start = time.perf_counter()
    result = train(train_config(cfg, arm, seed, data[arm.data], model))
    return result.checkpoint, time.perf_counter() - start


def final_checkpoint(cfg: StudyConfig, seed: int, arm_name: str) -> Path:
    """The last checkpoint of a trained arm; raises FileNotFoundError when that arm has not been trained."""
    from vlaforge.study.arms import ARMS
    from vlaforge.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(arm_dir(cfg, seed, ARMS[arm_name]) / "run")
    if found is None:
        raise FileNotFoundError(f"arm {arm_name!r} (seed {seed}) has no checkpoint yet; it must be trained first")
    return found


def trainable_parameters(checkpoint: Path, mode: str) -> tuple[int, int]:
    """(trainable, total) parameters of an arm's model in its training mode (LoRA: adapters + new heads)."""
    from safetensors import safe_open

    from vlaforge.model.vla import OpenVLA
    from vlaforge.train.checkpoint import ADAPTER_DIR
    from vlaforge.train.model import set_trainable

    model = OpenVLA.from_pretrained(checkpoint)
    total = sum(p.numel() for p in model.parameters())
    set_trainable(model, "frozen-vision" if mode == "frozen-vision" else "lora" if mode == "lora" else "full")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # lora: the new heads only
    if mode == "lora":
        for path in (checkpoint / ADAPTER_DIR).glob("*.safetensors"):
            with safe_open(str(path), "pt") as f:
                trainable += sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys() if "lora_" in k)  # noqa: SIM118
    return trainable, total


# ------------------------------------------------------------------------------------------- arms
def arm_dir(cfg: StudyConfig, seed: int, arm: Arm) -> Path:
    """Where one arm of one seed keeps its run, evaluation and result."""
    return cfg.out / f"seed-{seed}" / arm.name


def run_arm(cfg: StudyConfig, arm: Arm, seed: int, data: dict[str, Path]) -> dict[str, Any]:
    """Trains (or reuses) and evaluates one arm for one seed; returns and saves its result record."""
    from vlaforge.study.evaluate import evaluate_arm

    path = arm_dir(cfg, seed, arm) / "result.json"
    if path.is_file():
        return json.loads(path.read_text())
    if arm.trains:
        checkpoint, train_seconds = train_arm(cfg, arm, seed, data)
        trainable, total = trainable_parameters(checkpoint, arm.mode)
    else:
        checkpoint, train_seconds = final_checkpoint(cfg, seed, arm.checkpoint_of or ""), 0.0
        trainable, total = 0, 0
    result: dict[str, Any] = {
        "arm": arm.name, "seed": seed, "train_seconds": round(train_seconds, 1), "trainable_params": trainable,
        "total_params": total, "checkpoint": str(checkpoint),
    }  # fmt: skip
    if arm.suite:
        result.update(evaluate_arm(cfg, arm, checkpoint, arm_dir(cfg, seed, arm) / "eval"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)  # atomic: a result file is either complete or absent
    return result


def estimate_minutes(cfg: StudyConfig, arms: list[Arm]) -> float:
    """A rough wall-time estimate on the 2-core CPU (about 70 samples/s of training, 60 eval episodes/min)."""
    samples = sum(cfg.steps_for(arm.budget) * cfg.batch_size for arm in arms if arm.trains)
    episodes = {"demo": 3, "ml45-test": 5}
    evals = sum(episodes.get(arm.suite, 0) * cfg.eval_episodes for arm in arms)
    demos = (
        3 * cfg.demo_episodes + len(cfg.pretrain_tasks or range(45)) * cfg.pretrain_episodes + 5 * cfg.adapt_episodes
    )
    return len(cfg.seeds) * (samples / 70 / 60 + evals / 40) + demos / 120


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Runs every arm the comparisons need, for every seed, then writes the report; returns the report."""
    from vlaforge.study.report import write_report

    cfg = cfg.resolved()
    arms = arms_needed(cfg.comparisons)
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "study_config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    minutes = estimate_minutes(cfg, arms)
    print(f"study: {len(arms)} arms x {len(cfg.seeds)} seed(s), comparisons {', '.join(cfg.comparisons)}; "
          f"expect about {minutes / 60:.1f} h on a 2-core CPU ({minutes:.0f} min). Interrupt any time: "
          "rerunning resumes.", flush=True)  # fmt: skip
    start = time.perf_counter()
    data = record_data(cfg, arms)
    results = []
    for seed in cfg.seeds:
        for arm in arms:
            print(f"\n=== seed {seed}: {arm.name} - {arm.what}  (t = {time.perf_counter() - start:.0f} s)", flush=True)
            results.append(run_arm(cfg, arm, seed, data))
    return write_report(cfg, arms, results, wall_seconds=time.perf_counter() - start)
