"""`vlaforge bench train`: training throughput, step time and peak memory per model preset and mode.

    vlaforge bench train                                  # tiny and demo presets, full vs LoRA
    vlaforge bench train --presets tiny --modes full lora qlora --batch-size 4 --steps 20 --threads 2

Everything runs through the real trainer (`build_run` + `train_step`) on synthetic data. Timing: for each
preset one subprocess builds a run per mode, does `warmup` untimed steps of each, then `steps` rounds of
one timed step per mode (round-robin, so machine noise hits every mode alike); a step is timed from
fetching the batch to the end of the optimizer step. Reported: samples/s (batch / median step time),
median and p90 step time, the median per-round ratio to the first mode, and trainable parameters.
Memory: each (preset, mode) also runs alone in a fresh subprocess for `warmup` steps, which reports its
peak RSS and the RSS growth from just before the model was built (weights + gradients + AdamW state +
activations); on a GPU, torch's peak allocated memory instead.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import tyro

MB = 2**20


@dataclass
class Args:
    """Benchmark the training step."""

    presets: tuple[str, ...] = ("tiny", "demo")  # model presets to train (fresh random weights)
    modes: tuple[str, ...] = ("full", "lora")  # training modes: full, frozen-vision, lora, qlora
    batch_size: int = 8  # samples per step
    steps: int = 10  # timed rounds (one step per mode each)
    warmup: int = 3  # untimed steps per mode first
    lora_rank: int = 32  # LoRA rank (the original's default)
    precision: str = "fp32"  # fp32 or bf16 (autocast)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    json: bool = False  # print JSON rows instead of a table
    child: str | None = None  # internal: "timing:PRESET" or "memory:PRESET:MODE", measured in this process


@dataclass
class Row:
    """One measured configuration."""

    preset: str  # model preset
    mode: str  # training mode
    batch_size: int  # samples per step
    samples_per_s: float  # batch / median step time
    step_ms_median: float  # median step time
    step_ms_p90: float  # 90th percentile step time
    ratio_to_first: float  # median per-round step-time ratio to the first mode of the preset
    trainable_params: int  # parameters that receive gradients
    total_params: int  # all parameters (adapters included)
    peak_rss_mb: float  # peak resident memory of the process that ran this configuration alone
    train_memory_mb: float  # RSS growth from before the model was built (GPU: peak allocated)
    extra: dict = field(default_factory=dict)  # device, threads, precision


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args: Args, preset: str, mode: str):  # noqa: ANN201 (a vlaforge.train.loop.Run)
    """A trainer run of `mode` on `preset` with synthetic data of the preset's action size."""
    import torch

    from vlaforge.config import get_preset
    from vlaforge.train.config import SyntheticConfig, TrainConfig
    from vlaforge.train.distributed import init_distributed
    from vlaforge.train.loop import build_run

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        output_dir=tempfile.mkdtemp(prefix="vlaforge-bench-"), model=preset, mode=mode, batch_size=args.batch_size,
        max_steps=args.warmup + args.steps, precision=args.precision, tensorboard=False, progress=False,
        num_threads=args.threads,
    )  # fmt: skip
    cfg.lora.rank = args.lora_rank
    cfg.data.synthetic = SyntheticConfig(num_samples=4 * args.batch_size, action_dim=get_preset(preset).action_dim or 7)
    try:
        return build_run(cfg, init_distributed("none"))
    finally:
        shutil.rmtree(cfg.output_dir, ignore_errors=True)  # nothing is saved; only the fresh LoRA base lands there


def step(run) -> float:  # noqa: ANN001
    """Seconds of one optimizer step, batch fetch included."""
    from vlaforge.train.loop import train_step

    start = time.perf_counter()
    train_step(run, [next(run.batches)])
    return time.perf_counter() - start


def measure_timing(args: Args, preset: str) -> dict:
    """Round-robin step times of every mode of `preset`, in this process."""
    from vlaforge.train.model import parameter_counts

    runs = {mode: build(args, preset, mode) for mode in args.modes}
    for run in runs.values():
        for _ in range(args.warmup):
            step(run)
    times: dict[str, list[float]] = {mode: [] for mode in runs}
    for _ in range(args.steps):
        for mode, run in runs.items():
            times[mode].append(step(run))
    counts = {mode: parameter_counts(run.module)["total"] for mode, run in runs.items()}
    return {"times": times, "counts": counts}


def measure_memory(args: Args, preset: str, mode: str) -> dict:
    """Peak RSS (or GPU memory) of `mode` on `preset` running alone for `warmup` steps."""
    import torch

    before = rss_mb()
    run = build(args, preset, mode)
    for _ in range(max(1, args.warmup)):
        step(run)
    gpu = torch.cuda.is_available()
    growth = torch.cuda.max_memory_allocated() / MB if gpu else rss_mb() - before
    extra = {"device": "cuda" if gpu else "cpu", "threads": torch.get_num_threads(), "precision": args.precision}
    return {"peak_rss_mb": rss_mb(), "train_memory_mb": growth, "extra": extra}


def child(args: Args, what: str) -> dict:
    """Runs `python -m vlaforge.bench.train --child WHAT` with the same settings; returns its JSON."""
    argv = [sys.executable, "-m", "vlaforge.bench.train", "--child", what, "--modes", *args.modes,
            "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--lora-rank", str(args.lora_rank), "--precision", args.precision]  # fmt: skip
    if args.threads:
        argv += ["--threads", str(args.threads)]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_for(args: Args, preset: str) -> list[Row]:
    """Timing (one subprocess) and memory (one subprocess per mode) of a preset, as table rows."""
    timing = child(args, f"timing:{preset}")
    first = timing["times"][args.modes[0]]
    rows = []
    for mode in args.modes:
        times, memory = timing["times"][mode], child(args, f"memory:{preset}:{mode}")
        median = statistics.median(times)
        p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else median
        ratio = statistics.median(t / f for t, f in zip(times, first))
        trainable, frozen = timing["counts"][mode]
        rows.append(Row(preset, mode, args.batch_size, args.batch_size / median, 1e3 * median, 1e3 * p90, ratio,
                        trainable, trainable + frozen, **memory))  # fmt: skip
        print(f"measured {preset} / {mode}: {rows[-1].samples_per_s:.2f} samples/s", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| preset | mode | batch | samples/s | step ms (median) | step ms (p90) | time vs first mode "
        "| trainable params | peak RSS MB | train memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.preset} | {r.mode} | {r.batch_size} | {r.samples_per_s:.2f} | {r.step_ms_median:.0f} | "
            f"{r.step_ms_p90:.0f} | {r.ratio_to_first:.2f}x | {r.trainable_params:,} of {r.total_params:,} | "
            f"{r.peak_rss_mb:.0f} | {r.train_memory_mb:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge bench train`."""
    from vlaforge.config import PRESETS

    args = tyro.cli(Args, args=argv, prog="vlaforge bench train", description=__doc__)
    if args.child:
        kind, preset, *mode = args.child.split(":")
        result = measure_timing(args, preset) if kind == "timing" else measure_memory(args, preset, mode[0])
        print(json.dumps(result))
        return 0
    missing = [p for p in args.presets if p not in PRESETS]
    if missing:
        print(f"skipping presets that do not exist: {', '.join(missing)}", file=sys.stderr)
    rows = [row for preset in args.presets if preset in PRESETS for row in rows_for(args, preset)]
    print("\n".join(json.dumps(asdict(r)) for r in rows) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
