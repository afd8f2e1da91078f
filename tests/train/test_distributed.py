"""DDP and FSDP2 under torchrun (2 CPU processes, gloo) against one process with the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def common_args(checkpoint: Path, output: Path, max_steps: int = 3) -> list[str]:
    return [
        "train", "--model", str(checkpoint), "--output-dir", str(output), "--max-steps", str(max_steps),
        "--save-every", "2", "--no-progress", "--no-tensorboard", "--num-threads", "1",
        "--data.synthetic.num-samples", "8", "--data.synthetic.num-tasks", "2", "--optim.max-grad-norm", "1.0",
    ]  # fmt: skip


def run(argv: list[str], nproc: int = 1, timeout: float = 240) -> None:
    if nproc == 1:
        command = [sys.executable, "-m", "vlaforge.cli.main", *argv]
    else:
        command = [str(TORCHRUN), f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
                   f"--master_port={free_port()}", "-m", "vlaforge.cli.main", *argv]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


def max_difference(a: Path, b: Path) -> float:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.fixture(scope="module")
def single_process(small_checkpoint, tmp_path_factory) -> Path:
    """One process, batch 4: the reference the data-parallel runs must reproduce."""
    output = tmp_path_factory.mktemp("single")
    run([*common_args(small_checkpoint, output), "--batch-size", "4"])
    return output / "checkpoints" / "step-000003"


def test_ddp_on_two_processes_gives_the_weights_of_one_process(small_checkpoint, single_process, tmp_path):
    run([*common_args(small_checkpoint, tmp_path), "--batch-size", "2", "--strategy", "ddp"], nproc=2)
    final = tmp_path / "checkpoints" / "step-000003"
    assert max_difference(final, single_process) < 1e-5
    assert max_difference(final, small_checkpoint) > 1e-4  # and training did move the weights


def test_fsdp2_matches_one_process_and_resumes_exactly(small_checkpoint, single_process, tmp_path):
    args = [*common_args(small_checkpoint, tmp_path), "--batch-size", "2", "--strategy", "fsdp"]
    run(args, nproc=2)
    final = tmp_path / "checkpoints" / "step-000003"
    assert (final / "optimizer-rank0.pt").is_file() and (final / "optimizer-rank1.pt").is_file()
    assert max_difference(final, single_process) < 1e-5
    reference = tmp_path / "reference-step-3"
    shutil.move(final, reference)  # continue from step 2 (sharded optimizer state) to step 3 again
    run([*args, "--resume"], nproc=2)
    assert max_difference(final, reference) == 0.0
    assert torch.equal(load_file(str(final / "model.safetensors"))["projector.fc1.weight"],
                       load_file(str(reference / "model.safetensors"))["projector.fc1.weight"])  # fmt: skip
