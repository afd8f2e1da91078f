"""Serve a checkpoint to robots: OpenVLA-compatible REST, a msgpack websocket, dynamic batching.

    vlaforge serve path/to/checkpoint                                  # http://127.0.0.1:8000 (loopback only)
    VLAFORGE_SERVE_TOKEN=secret vlaforge serve ckpt --host 0.0.0.0     # on the network: require a token
    vlaforge serve ckpt --max-batch-size 16 --max-wait-ms 10           # more robots per batch
    vlaforge serve ckpt --quant int8                                   # int8 decoder: faster on CPUs
    vlaforge serve ckpt --safety.scale 0.3 --safety.scale-dims 0 1 2 3 4 5    # careful zero-shot run

Clients: `vlaforge.client.HTTPPolicyClient` / `WebsocketPolicyClient`, or any OpenVLA `deploy.py` client.
See docs/serving.md for the protocol, the safety layer and measured throughput.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from vlaforge.serve.config import ServeConfig

TOKEN_ENV = "VLAFORGE_SERVE_TOKEN"


@dataclass
class Args:
    """Serve a checkpoint over HTTP and websocket."""

    checkpoint: Annotated[Path, tyro.conf.Positional]  # checkpoint directory (config.json + safetensors + tokenizer)
    serve: Annotated[ServeConfig, tyro.conf.arg(name="")] = field(default_factory=ServeConfig)
    dtype: Literal["float32", "bfloat16"] = "float32"  # weight dtype (with --quant: of the layers left float)
    device: str = "cpu"  # torch device for the model ("cuda", "cuda:1", ...)
    threads: int | None = None  # torch CPU threads for the model; None = torch's default (one per core)
    log_level: Literal["debug", "info", "warning", "error"] = "info"  # server log verbosity
    access_log: bool = False  # log one line per HTTP request


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge serve`."""
    import torch

    from vlaforge.serve.app import create_app
    from vlaforge.serve.policy import BatchPolicy
    from vlaforge.serve.server import run

    args = tyro.cli(Args, args=argv, prog="vlaforge serve", description=__doc__)
    config = args.serve
    if config.token is None and os.environ.get(TOKEN_ENV):
        config.token = os.environ[TOKEN_ENV]
    config.validate()
    if not args.checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint directory {args.checkpoint} does not exist")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.host not in ("127.0.0.1", "localhost", "::1") and config.token is None:
        print(f"vlaforge serve: warning: listening on {config.host} without a token; set ${TOKEN_ENV}", file=sys.stderr)
    dtype = getattr(torch, args.dtype)
    policy = BatchPolicy.from_pretrained(args.checkpoint, dtype=dtype, device=args.device, quant=config.quant)
    meta, auth = policy.metadata(), "on" if config.token else "off"
    print(
        f"vlaforge serve: {meta['model_name']} ({meta['quant']}) | statistics {', '.join(meta['norm_stats_keys'])} | "
        f"batches of <= {config.max_batch_size}, wait <= {config.max_wait_ms} ms | auth {auth}",
        flush=True,
    )
    run(create_app(policy, config), config, log_level=args.log_level, access_log=args.access_log)
    return 0
