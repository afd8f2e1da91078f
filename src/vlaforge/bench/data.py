"""Measure the data pipeline: frames per second delivered to the trainer, on 224 px video.

    vlaforge bench data                         # synthetic 224 px LeRobot v3 dataset, written to a temp dir
    vlaforge bench data --path data/mw-demo     # an existing dataset (any format)
    vlaforge bench data --json                  # one JSON object for the issue note

Rows, each in steady state (the first batch or sample is not timed):
- decode: sequential decoding of whole episodes (PyAV), frames/s;
- decode + augment + tokenize: `VLAMixtureDataset` samples in this process (shuffle buffer, BOUNDS_Q99
  normalization, random crop + color jitter, the processor's image transform, prompt + action tokens);
- random access: `VLAFrameDataset` samples at random steps (one seek per sample), the map-style path;
- DataLoader: the mixture through `torch.utils.data.DataLoader` with `--workers` processes and the collator,
  i.e. what the training loop receives;
- tiny train step: forward + backward + AdamW of the `tiny` preset on such batches, samples/s, for
  comparison (the loader must be well above it not to be the bottleneck).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro


@dataclass
class Args:
    """Measure frames/s of the data pipeline (decode + augment + tokenize) on 224 px video."""

    path: str | None = None  # dataset to read (any format); default: a synthetic 224 px LeRobot dataset
    episodes: int = 16  # episodes of the synthetic dataset
    length: int = 60  # steps per synthetic episode
    size: int = 224  # frame size of the synthetic dataset
    samples: int = 600  # timed samples per row
    workers: int = 2  # DataLoader worker processes
    batch_size: int = 16  # batch size of the DataLoader and train rows
    train_steps: int = 6  # timed steps of the tiny-model row (0 skips it)
    json: bool = False  # print one JSON object instead of a table


@dataclass
class Row:
    """One measured configuration."""

    config: str  # what was measured
    items: int  # frames (or samples) timed
    seconds: float  # wall time
    per_s: float  # items / seconds


def synthetic_frames(length: int, size: int, seed: int) -> np.ndarray:
    """`[T, size, size, 3]` uint8 frames that look like a scene: gradients, a moving square, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([90 + 80 * x, 70 + 60 * y, 120 + 40 * np.sin(4 * x + seed)], axis=-1)  # [H, W, 3]
    frames = np.repeat(base[None], length, axis=0)  # [T, H, W, 3]
    for t in range(length):
        cx, cy = int((0.2 + 0.6 * t / length) * size), int((0.5 + 0.2 * np.sin(t / 5 + seed)) * size)
        frames[t, max(0, cy - 12) : cy + 12, max(0, cx - 12) : cx + 12] = (200, 60, 40)
    frames += rng.normal(0, 3, frames.shape).astype(np.float32)
    return np.clip(frames, 0, 255).astype(np.uint8)


def write_synthetic(root: Path, args: Args) -> Path:
    """A LeRobot v3 dataset of `args.episodes` episodes of `args.length` 224 px frames, 7-D actions."""
    from vlaforge.data.lerobot import LeRobotWriter

    features = {
        "observation.images.main": {"dtype": "video", "shape": [args.size, args.size, 3], "names": None},
        "observation.state": {"dtype": "float32", "shape": [8], "names": None},
        "action": {"dtype": "float32", "shape": [7], "names": None},
    }
    writer = LeRobotWriter(root, fps=20, features=features)
    rng = np.random.default_rng(0)
    for episode in range(args.episodes):
        actions = rng.normal(0, 0.3, (args.length, 7)).astype(np.float32)
        actions[:, 6] = (rng.random(args.length) > 0.5).astype(np.float32)
        arrays = {
            "observation.images.main": synthetic_frames(args.length, args.size, episode),
            "observation.state": rng.normal(size=(args.length, 8)).astype(np.float32),
            "action": actions,
        }
        writer.add_episode(arrays, task=f"pick up the object number {episode % 4}")
    writer.finalize(progress=False)
    return root


def decode_row(dataset, limit: int) -> Row:
    """Sequential decoding of whole episodes of the first camera."""
    camera = dataset.camera_names[0]
    frames, start = 0, time.perf_counter()
    for index in range(dataset.num_episodes):
        frames += len(dataset.episode(index).frames(camera).read())
        if frames >= limit:
            break
    seconds = time.perf_counter() - start
    return Row("decode (PyAV, sequential episodes)", frames, round(seconds, 3), round(frames / seconds, 1))


def pipeline_row(mixture, count: int) -> Row:
    """Samples from the mixture in this process, after a warm-up that fills the shuffle buffer."""
    iterator = iter(mixture)
    next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    seconds = time.perf_counter() - start
    return Row("decode + augment + tokenize, 1 process", count, round(seconds, 3), round(count / seconds, 1))


def frame_dataset_row(frames, count: int) -> Row:
    """Map-style samples at random steps (a seek per sample), as a shuffling sampler reads them."""
    order = np.random.default_rng(0).permutation(len(frames))[: count + 1]
    frames[int(order[0])]
    start = time.perf_counter()
    for index in order[1:]:
        frames[int(index)]
    seconds = time.perf_counter() - start
    label = "random access (VLAFrameDataset, seek per sample), 1 process"
    return Row(label, len(order) - 1, round(seconds, 3), round((len(order) - 1) / seconds, 1))


def loader_row(mixture, collator, args: Args) -> tuple[Row, dict]:
    """Frames/s the trainer receives through a DataLoader with worker processes."""
    loader = torch.utils.data.DataLoader(
        mixture, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collator, persistent_workers=False
    )
    iterator = iter(loader)
    first = next(iterator)  # worker start-up and buffer fill are not timed
    batches = max(1, args.samples // args.batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    del iterator
    frames = batches * args.batch_size
    label = f"DataLoader, {args.workers} workers, batch {args.batch_size} (to the trainer)"
    return Row(label, frames, round(seconds, 3), round(frames / seconds, 1)), first


def train_row(batch: dict, tokenizer, args: Args) -> Row:
    """Forward + backward + AdamW steps of the tiny preset on one real batch."""
    from vlaforge.config import get_preset
    from vlaforge.model.vla import OpenVLA

    model = OpenVLA.create(get_preset("tiny"), tokenizer, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "labels")}

    def step() -> None:
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(args.train_steps):
        step()
    seconds = time.perf_counter() - start
    samples = args.train_steps * args.batch_size
    label = f"tiny preset train step, batch {args.batch_size} (samples/s)"
    return Row(label, samples, round(seconds, 3), round(samples / seconds, 1))


def measure(args: Args, root: Path) -> list[Row]:
    """All rows on the dataset at `root` (or `args.path`)."""
    from vlaforge.config import get_preset
    from vlaforge.data.batches import (
        PaddedCollator,
        SampleBuilder,
        VLADataConfig,
        VLAFrameDataset,
        VLAMixtureDataset,
        compute_statistics,
    )
    from vlaforge.data.sources import open_dataset
    from vlaforge.data.tokenizer import build_tokenizer

    dataset = open_dataset(args.path or root)
    config, tokenizer = get_preset("tiny"), build_tokenizer()
    statistics = compute_statistics([dataset], progress=False)
    builder = SampleBuilder(tokenizer, config, statistics, VLADataConfig(shuffle_buffer=256))
    mixture = VLAMixtureDataset([dataset], builder)
    frames = VLAFrameDataset([dataset], builder)
    rows = [decode_row(dataset, args.samples), pipeline_row(mixture, args.samples)]
    rows.append(frame_dataset_row(frames, args.samples))
    loader, batch = loader_row(mixture, PaddedCollator(config.pad_token_id), args)
    rows.append(loader)
    if args.train_steps > 0:
        rows.append(train_row(batch, tokenizer, args))
    return rows


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge bench data`."""
    args = tyro.cli(Args, args=argv, prog="vlaforge bench data", description=__doc__)
    torch.set_num_threads(1)  # the workers take the other core(s)
    written = 0.0
    with tempfile.TemporaryDirectory(prefix="vlaforge-bench-data-") as tmp:
        root = Path(tmp) / "synthetic"
        if args.path is None:
            start = time.perf_counter()
            write_synthetic(root, args)
            written = round(time.perf_counter() - start, 2)
        rows = measure(args, root)
    synthetic = f"synthetic, {args.episodes} x {args.length} frames at {args.size} px, AV1 ({written} s to write)"
    source = args.path or synthetic
    if args.json:
        print(json.dumps({"dataset": source, "rows": [asdict(r) for r in rows]}, indent=2))
        return 0
    print(f"dataset: {source}\n")
    print(f"{'configuration':<62} {'items':>7} {'seconds':>8} {'per s':>8}")
    for row in rows:
        print(f"{row.config:<62} {row.items:>7} {row.seconds:>8.2f} {row.per_s:>8.1f}")
    return 0
