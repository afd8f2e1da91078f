"""A run killed with SIGKILL and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

MAX_STEPS = 12


def command(checkpoint: Path, output: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "vlaforge.cli.main", "train", "--model", str(checkpoint), "--output-dir", str(output),
        "--max-steps", str(MAX_STEPS), "--save-every", "2", "--keep-last", "2", "--batch-size", "2",
        "--grad-accumulation", "2", "--optim.schedule", "cosine", "--optim.warmup-steps", "2",
        "--optim.max-grad-norm", "1.0", "--num-threads", "1", "--no-progress", "--no-tensorboard",
        "--data.synthetic.num-samples", "12", "--data.synthetic.num-tasks", "3", *extra,
    ]  # fmt: skip


def run(argv: list[str], timeout: float = 240) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-4000:]


def test_sigkill_then_resume_gives_the_uninterrupted_weights(small_checkpoint, tmp_path):
    run(command(small_checkpoint, tmp_path / "straight"))
    victim = subprocess.Popen(
        command(small_checkpoint, tmp_path / "killed"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "killed" / "checkpoints" / "step-000004" / "trainer_state.pt").exists():
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within 3 minutes"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    final = tmp_path / "killed" / "checkpoints" / f"step-{MAX_STEPS:06d}"
    assert not final.exists()  # it really was interrupted
    run(command(small_checkpoint, tmp_path / "killed", "--resume"))
    straight = load_file(str(tmp_path / "straight" / "checkpoints" / f"step-{MAX_STEPS:06d}" / "model.safetensors"))
    resumed = load_file(str(final / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
