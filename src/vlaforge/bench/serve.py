"""Load-test the policy server on loopback: N clients x M requests, batched vs one at a time.

    vlaforge bench serve                                   # tiny checkpoint, 8 clients x 25 requests, HTTP
    vlaforge bench serve --protocol ws --clients 16        # the msgpack websocket
    vlaforge bench serve --checkpoint path/to/ckpt --json  # your model; one JSON object for the issue note

Each mode starts `vlaforge serve` as a child process (so clients and server do not share a GIL), warms it
up, then lets every client thread send its requests back to back. Printed per mode: errors, p50/p99
latency, throughput, the batch sizes the server formed; then the batched/unbatched throughput ratio, and
for scale the model's own batching gain (`predict_action` on a batch vs one sample at a time, in-process):
no server can beat that ceiling. With `--rounds R` the modes alternate R times (the median ratio is
reported), which evens out other load on a shared machine.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from vlaforge.client import HTTPPolicyClient, WebsocketPolicyClient

_STATS = {"synthetic": {"action": {"q01": [-0.05] * 6 + [0.0], "q99": [0.05] * 6 + [1.0],
                                   "mask": [True] * 6 + [False]}}}  # fmt: skip
_INSTRUCTIONS = ["pick up the red block", "open the top drawer", "put the eggplant in the bowl", "push the button"]


@dataclass
class Args:
    """Measure serving throughput and latency with concurrent clients."""

    checkpoint: Path | None = None  # checkpoint to serve; None builds the tiny preset in a temporary directory
    clients: int = 8  # concurrent clients (one thread and one connection each)
    requests: int = 25  # timed requests per client, after 2 warm-up requests each
    protocol: Literal["http", "ws"] = "http"  # POST /act (json-numpy) or the msgpack websocket
    max_batch_size: int = 8  # the batched mode's limit (the unbatched mode uses 1)
    max_wait_ms: float = 5.0  # the batched mode's wait for company
    image_size: int = 224  # clients send [S, S, 3] uint8 frames
    modes: list[Literal["batched", "unbatched"]] = field(default_factory=lambda: ["unbatched", "batched"])
    rounds: int = 1  # repeat the modes, alternating, this many times
    threads: int | None = 1  # torch threads per server (`vlaforge serve --threads`); 1 is steadiest on a shared CPU
    ceiling: bool = True  # also time predict_action in-process (batch vs one at a time)
    json: bool = False  # print one JSON object instead of a table


@dataclass
class ModeResult:
    """Figures of one server configuration."""

    mode: str
    round: int
    max_batch_size: int
    requests: int
    errors: int
    seconds: float
    throughput_rps: float
    requests_per_cpu_s: float  # timed requests per CPU second the server used for them (steady under load)
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_batch_size: float
    batch_sizes: dict[str, int]
    exit_code: int
    first_error: str = ""


def build_tiny_checkpoint(directory: Path) -> Path:
    """Saves the tiny preset (random weights, byte tokenizer, 7-D synthetic statistics) to `directory`."""
    from vlaforge.config import get_preset
    from vlaforge.data.tokenizer import build_tokenizer
    from vlaforge.model.vla import OpenVLA

    config = get_preset("tiny")
    config.norm_stats = json.loads(json.dumps(_STATS))
    OpenVLA.create(config, build_tokenizer(), seed=0).save_pretrained(directory)
    return directory


def _client_loop(
    args: Args, url: str, index: int, barrier: threading.Barrier, latencies: list[float], errors: list[str]
) -> None:
    """One client: 2 warm-up requests, the barrier, then `args.requests` timed ones.

    The barrier makes all clients start the timed phase together; latencies are recorded in seconds.
    """
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
    instruction = _INSTRUCTIONS[index % len(_INSTRUCTIONS)]
    try:
        ws = args.protocol == "ws"
        client = WebsocketPolicyClient(url.replace("http://", "ws://") + "/ws") if ws else HTTPPolicyClient(url)
    except Exception as err:
        errors.append(f"client {index} could not connect: {type(err).__name__}: {err}")
        barrier.abort()  # the others must not wait for this one
        return
    try:
        for step in range(2 + args.requests):
            if step == 2:
                try:
                    barrier.wait(timeout=600)
                except threading.BrokenBarrierError:
                    errors.append(f"client {index}: another client failed to start")
                    return
            start = time.perf_counter()
            try:
                client.act(image, instruction)
            except Exception as err:  # any failure counts as an error of the run
                errors.append(f"client {index} request {step}: {type(err).__name__}: {err}")
                continue
            if step >= 2:
                latencies.append(time.perf_counter() - start)
    finally:
        client.close()


def run_mode(args: Args, checkpoint: Path, mode: str, round_index: int = 0) -> ModeResult:
    """Starts a server in `mode`, runs all clients against it, stops it with SIGTERM."""
    from vlaforge.serve.server import ServerProcess

    batch = args.max_batch_size if mode == "batched" else 1
    flags = ["--max-batch-size", str(batch), "--max-wait-ms", str(args.max_wait_ms), "--log-level", "warning"]
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    latencies: list[float] = []
    errors: list[str] = []
    started: list[float] = []  # when the timed phase began (set once all clients are warm)
    with ServerProcess(checkpoint, flags) as server:
        cpu_before: list[float] = []  # the server's CPU seconds when the timed phase began
        probe = HTTPPolicyClient(server.url)

        def mark_start() -> None:  # runs once, when every client is warm
            cpu_before.append(probe.health()["cpu_s"])
            started.append(time.perf_counter())

        barrier = threading.Barrier(args.clients, action=mark_start)
        threads = [
            threading.Thread(target=_client_loop, args=(args, server.url, i, barrier, latencies, errors))
            for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started[0] if started else float("inf")  # inf: no timed phase ran
        health = probe.health()
        probe.close()
        exit_code = server.stop()
    cpu_s = max(health["cpu_s"] - (cpu_before[0] if cpu_before else 0.0), 1e-9)
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return ModeResult(
        mode=mode,
        round=round_index,
        max_batch_size=batch,
        requests=len(latencies),
        errors=len(errors),
        seconds=round(seconds, 3),
        throughput_rps=round(len(latencies) / seconds, 2),
        requests_per_cpu_s=round(len(latencies) / cpu_s, 2),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p90_ms=round(float(np.percentile(ms, 90)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        mean_batch_size=health["mean_batch_size"],
        batch_sizes=health["batch_sizes"],
        exit_code=exit_code,
        first_error=errors[0] if errors else "",
    )


def model_ceiling(args: Args, checkpoint: Path) -> dict[str, float]:
    """In-process `predict_action` CPU time for one sample and for a batch of `max_batch_size`, and their ratio."""
    import torch

    from vlaforge.model.vla import OpenVLA

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = OpenVLA.from_pretrained(checkpoint)
    rng = np.random.default_rng(0)
    n = args.max_batch_size
    images = [rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8) for _ in range(n)]
    texts = [_INSTRUCTIONS[i % len(_INSTRUCTIONS)] for i in range(n)]

    def seconds(fn, repeats: int = 5) -> float:  # CPU time: steadier than wall time on a shared machine
        fn()  # warm-up
        start = time.process_time()
        for _ in range(repeats):
            fn()
        return (time.process_time() - start) / repeats

    one = seconds(lambda: [model.predict_action(images[i], texts[i]) for i in range(n)]) / n
    batch = seconds(lambda: model.predict_action(images, texts))
    return {"single_ms": round(one * 1e3, 2), "batch_ms": round(batch * 1e3, 2), "batch_size": n,
            "batching_gain": round(n * one / batch, 2)}  # fmt: skip


def ratios(results: list[ModeResult], figure: str = "throughput_rps") -> list[float]:
    """Batched / unbatched `figure` (a ModeResult field) of each round that ran both modes."""
    out = []
    for round_index in sorted({r.round for r in results}):
        by_mode = {r.mode: getattr(r, figure) for r in results if r.round == round_index}
        if "batched" in by_mode and "unbatched" in by_mode and by_mode["unbatched"] > 0:
            out.append(round(by_mode["batched"] / by_mode["unbatched"], 2))
    return out


def print_table(args: Args, results: list[ModeResult], ceiling: dict[str, float] | None) -> None:
    """The human-readable report."""
    threads = "default" if args.threads is None else args.threads
    print(f"{args.clients} clients x {args.requests} requests, {args.protocol}, {args.image_size}px images, "
          f"max_wait_ms {args.max_wait_ms}, server threads {threads}")  # fmt: skip
    print(f"{'round':>5} {'mode':<10} {'batch<=':>7} {'errors':>6} {'req/s':>8} {'req/cpu-s':>9} {'p50 ms':>8} "
          f"{'p90 ms':>8} {'p99 ms':>8} {'mean batch':>10}")  # fmt: skip
    for r in results:
        print(f"{r.round:>5} {r.mode:<10} {r.max_batch_size:>7} {r.errors:>6} {r.throughput_rps:>8.1f} "
              f"{r.requests_per_cpu_s:>9.1f} {r.p50_ms:>8.1f} {r.p90_ms:>8.1f} {r.p99_ms:>8.1f} "
              f"{r.mean_batch_size:>10.2f}")  # fmt: skip
        if r.first_error:
            print(f"  first error: {r.first_error}")
    for figure, label in (("throughput_rps", "throughput"), ("requests_per_cpu_s", "requests per server CPU second")):
        per_round = ratios(results, figure)
        if per_round:
            print(f"batched / unbatched {label}: {float(np.median(per_round)):.2f}x (rounds: {per_round})")
    if ceiling:
        print(f"model alone (CPU time): 1 sample {ceiling['single_ms']} ms, batch of {ceiling['batch_size']} "
              f"{ceiling['batch_ms']} ms -> batching gain ceiling {ceiling['batching_gain']}x")  # fmt: skip


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge bench serve`; returns 1 if any request failed."""
    args = tyro.cli(Args, args=argv, prog="vlaforge bench serve", description=__doc__)
    if args.clients < 1 or args.requests < 1 or args.rounds < 1:
        raise ValueError("--clients, --requests and --rounds must be at least 1")
    with tempfile.TemporaryDirectory(prefix="vlaforge-bench-serve-") as tmp:
        checkpoint = args.checkpoint or build_tiny_checkpoint(Path(tmp) / "tiny")
        results = [run_mode(args, checkpoint, mode, r) for r in range(args.rounds) for mode in args.modes]
        ceiling = model_ceiling(args, checkpoint) if args.ceiling else None
    if args.json:
        per_round, per_cpu = ratios(results), ratios(results, "requests_per_cpu_s")
        report = {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
            "results": [asdict(r) for r in results],
            "throughput_ratios": per_round,
            "median_throughput_ratio": float(np.median(per_round)) if per_round else None,
            "cpu_efficiency_ratios": per_cpu,
            "median_cpu_efficiency_ratio": float(np.median(per_cpu)) if per_cpu else None,
            "model_ceiling": ceiling,
        }
        print(json.dumps(report, indent=2))
    else:
        print_table(args, results, ceiling)
    return 1 if any(r.errors for r in results) else 0
