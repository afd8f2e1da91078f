"""The main job (`make demo`): Meta-World demonstrations -> a small VLA trained from scratch -> success rates.

Four stages, each resumable (rerun the same command after an interruption and finished stages are skipped):

1. **demos**: the scripted experts of the `demo` suite (button-press-topdown, drawer-close, window-open)
   record `episodes_per_task` episodes each from seeds 0..N-1, kept only when successful, as a LeRobot v3
   dataset (`vlaforge.sim.demos`).
2. **train**: the `demo` preset - both vision towers, projector, Llama, the 256-bin action tokens read for a
   chunk of actions in one pass, a proprio token - trained from scratch on the CPU (`vlaforge.train`).
3. **eval**: the final checkpoint runs `eval_episodes` episodes per task from held-out initial states
   (seed 7 onwards; the demos used 0..N-1), with chunks executed open loop (`vlaforge.sim.evaluate`).
4. **report**: `report.md` / `report.json` with the success table and 95% intervals, `training_curve.png`,
   and the rollout videos of the evaluation (`eval/videos/`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEMO_CAMERA = "corner"


@dataclass
class DemoJob:
    """Settings of `vlaforge demo`; the defaults are the measured 20-minute recipe (docs/results.md)."""

    out: Path = Path("outputs/demo")  # everything goes here: data/, run/, eval/, report.md
    episodes_per_task: int = 100  # scripted demonstrations attempted per task
    image_size: int = 98  # camera resolution = the demo preset's input (7 x 7 patches of 14 px)
    train_steps: int = 1600  # optimizer steps (about 12 minutes at ~70 samples/s on 2 cores)
    batch_size: int = 32  # samples per step
    lr: float = 5e-4  # peak learning rate (cosine decay after 100 warmup steps)
    precision: str = "fp32"  # fp32, or bf16 autocast (no measured gain on this CPU at this size)
    eval_episodes: int = 20  # evaluation episodes per task
    execute_steps: int = 2  # actions of each predicted chunk executed before the model is asked again
    seed: int = 0  # seed of the model initialization and the data order
    quick: bool = False  # a few-minute smoke run (few demos, steps and episodes): shows the plumbing only

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.quick:
            self.episodes_per_task, self.train_steps, self.eval_episodes = 4, 30, 2
        for name in ("episodes_per_task", "train_steps", "batch_size", "eval_episodes", "execute_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _banner(stage: str, start: float) -> None:
    print(f"\n=== {stage}  (t = {time.perf_counter() - start:.0f} s)", flush=True)


def record_demos(job: DemoJob) -> Path:
    """Stage 1: scripted demonstrations as a LeRobot v3 dataset (resumed if interrupted)."""
    from vlaforge.sim.demos import DemoConfig, generate_demos

    data = job.out / "data"
    summary = generate_demos(
        DemoConfig(out=data, suite="demo", episodes_per_task=job.episodes_per_task, seed=0,
                   image_size=job.image_size, cameras=(DEMO_CAMERA,))
    )  # fmt: skip
    if summary.interrupted:
        raise KeyboardInterrupt("demo recording interrupted; rerun `make demo` to resume")
    print(f"demos: {summary.total} successful episodes ({summary.dropped} failed ones dropped)")
    return data


def train_policy(job: DemoJob, data: Path) -> Path:
    """Stage 2: the demo preset trained from scratch; returns the final checkpoint (resumes a partial run)."""
    from vlaforge.train.checkpoint import latest_checkpoint
    from vlaforge.train.config import DataConfig, OptimConfig, TrainConfig
    from vlaforge.train.loop import train

    run_dir = job.out / "run"
    cfg = TrainConfig(
        output_dir=str(run_dir), model="demo", mode="full", seed=job.seed, max_steps=job.train_steps,
        batch_size=job.batch_size, precision=job.precision, save_every=max(job.train_steps // 4, 1), keep_last=1,
        log_every=max(min(job.train_steps // 50, 25), 1), num_threads=2,
        resume=latest_checkpoint(run_dir) is not None,
        optim=OptimConfig(lr=job.lr, warmup_steps=min(100, job.train_steps // 10), schedule="cosine",
                          min_lr_ratio=0.1, max_grad_norm=1.0),
        data=DataConfig(datasets=(str(data),), cameras=(DEMO_CAMERA,), image_aug=False, num_workers=1,
                        tokenizer_merges=128),
    )  # fmt: skip
    return train(cfg).checkpoint


def evaluate_policy(job: DemoJob, checkpoint: Path) -> dict[str, Any]:
    """Stage 3: success rates on held-out initial states, chunks executed open loop."""
    from vlaforge.infer.chunking import ChunkExecution
    from vlaforge.sim.evaluate import EvalConfig, evaluate
    from vlaforge.sim.policies import CheckpointPolicy

    policy = CheckpointPolicy(checkpoint)
    config = EvalConfig(
        suite="demo", episodes_per_task=job.eval_episodes, seed=7, image_size=job.image_size,
        cameras=(DEMO_CAMERA,), num_envs=6, num_workers=2, out=job.out / "eval",
        chunk_execution=ChunkExecution("open-loop", execute_steps=job.execute_steps),
    )  # fmt: skip
    try:
        return evaluate(policy, config)
    finally:
        policy.close()


def plot_training_curve(run_dir: Path, path: Path) -> None:
    """Loss and action-token accuracy over steps, from the run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r]
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, [r["loss"] for r in rows])
    axes[0].set(xlabel="optimizer step", ylabel="loss (action tokens)", title="training loss")
    for key in ("action_accuracy", "l1"):
        if key in rows[-1]:
            axes[1].plot(steps, [r.get(key) for r in rows], label=key)
    axes[1].set(xlabel="optimizer step", title="action metrics (normalized units)")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(job: DemoJob, results: dict[str, Any], seconds: dict[str, float]) -> dict[str, Any]:
    """Stage 4: report.md and report.json in `job.out`; returns the report."""
    tasks = results["tasks"]
    lines = [
        "# vlaforge demo: a VLA trained from scratch on a CPU, evaluated in Meta-World", "",
        f"Held-out initial states, {job.eval_episodes} episodes per task. Wall time: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + ".", "",
        "| task | success | 95% CI | mean length |", "|---|---|---|---|",
    ]  # fmt: skip
    for name, row in tasks.items():
        low, high = row["ci95"]
        lines.append(f"| {name} | {row['success_rate']:.0%} | {low:.0%} - {high:.0%} | {row['mean_length']:.0f} |")
    overall = results["overall"]
    (low, high), mean = overall["ci95"], overall["mean_task_success_rate"]
    lines += [f"| **mean** | **{mean:.0%}** | {low:.0%} - {high:.0%} | {overall['mean_length']:.0f} |", "",
              "![training curve](training_curve.png)", "", "Rollout videos: `eval/videos/`."]  # fmt: skip
    (job.out / "report.md").write_text("\n".join(lines) + "\n")
    report = {"job": {k: str(v) for k, v in asdict(job).items()}, "seconds": seconds, "results": results}
    (job.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print("\n".join(lines[4:-3]))
    return report


def run_demo(job: DemoJob) -> dict[str, Any]:
    """Runs the four stages and returns the report."""
    job.out.mkdir(parents=True, exist_ok=True)
    start, seconds = time.perf_counter(), {}
    _banner("1/4 recording scripted demonstrations", start)
    data = record_demos(job)
    seconds["demos"] = time.perf_counter() - start
    _banner("2/4 training the demo VLA from scratch", start)
    checkpoint = train_policy(job, data)
    seconds["training"] = time.perf_counter() - start - seconds["demos"]
    _banner("3/4 evaluating on held-out initial states", start)
    results = evaluate_policy(job, checkpoint)
    seconds["evaluation"] = time.perf_counter() - start - seconds["demos"] - seconds["training"]
    _banner("4/4 report", start)
    plot_training_curve(job.out / "run", job.out / "training_curve.png")
    seconds["total"] = time.perf_counter() - start
    report = write_report(job, results, seconds)
    print(f"\nreport: {job.out / 'report.md'}")
    return report
