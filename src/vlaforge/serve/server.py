"""Running the app: uvicorn with a graceful shutdown, in the foreground, a thread or a child process.

On SIGTERM (or Ctrl-C) the server stops accepting connections, answers every request already received
(websocket ones included, which uvicorn alone would cut off with close code 1012), refuses new requests on
open connections with 503, and only then closes the connections and stops the batcher.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from vlaforge.serve.config import ServeConfig
from vlaforge.serve.service import PolicyService

log = logging.getLogger("vlaforge.serve")
READY_LINE = "vlaforge serve: listening on "  # printed once the port is bound (parsed by ServerProcess)


class GracefulServer(uvicorn.Server):
    """`uvicorn.Server` that lets in-flight requests finish before it closes connections.

    Args:
        config: uvicorn's config (see `uvicorn_config`).
        on_ready: called with the server's base URL once it listens.
    """

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None] | None = None) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    @property
    def service(self) -> PolicyService:
        """The app's PolicyService."""
        return self.config.app.state.service

    @property
    def url(self) -> str:
        """`http://host:port` of the first listening socket."""
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, then `on_ready(url)`."""
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            self.on_ready(self.url)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, let the service drain, then uvicorn's shutdown (close connections, lifespan)."""
        for server in self.servers:
            server.close()  # no new connections; open ones may still send (and get 503)
        log.info("draining: answering requests in flight before closing connections")
        await self.service.drain(self.service.config.shutdown_timeout_s)
        await super().shutdown(sockets)


def uvicorn_config(
    app: FastAPI, config: ServeConfig, log_level: str = "info", access_log: bool = False
) -> uvicorn.Config:
    """uvicorn settings derived from the ServeConfig (websocket size limit, shutdown timeout)."""
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ws_max_size=config.max_request_bytes,
        timeout_graceful_shutdown=int(config.shutdown_timeout_s) + 5,
        log_level=log_level,
        access_log=access_log,
    )


def run(app: FastAPI, config: ServeConfig, log_level: str = "info", access_log: bool = False) -> None:
    """Serves in the foreground until SIGTERM/SIGINT; prints `READY_LINE + url` once listening."""

    def announce(url: str) -> None:
        print(f"{READY_LINE}{url}", flush=True)

    GracefulServer(uvicorn_config(app, config, log_level, access_log), on_ready=announce).run()


class ServerThread:
    """Serves the app in a background thread on an ephemeral port (tests, notebooks, benchmarks).

        with ServerThread(create_app(policy, ServeConfig())) as server:
            HTTPPolicyClient(server.url).act(image, "pick up the cup")

    Args:
        app: the app from `create_app`; its ServeConfig's host is used, its port ignored.
        startup_timeout_s: how long to wait for the server to listen.
    """

    def __init__(self, app: FastAPI, startup_timeout_s: float = 30.0) -> None:
        config: ServeConfig = app.state.service.config
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((config.host, 0))
        self.url = "http://{}:{}".format(*self._socket.getsockname()[:2])
        self.server = GracefulServer(uvicorn_config(app, config, log_level="warning"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self.startup_timeout_s = startup_timeout_s

    @property
    def ws_url(self) -> str:
        """The websocket endpoint's URL."""
        return self.url.replace("http://", "ws://") + "/ws"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {self.startup_timeout_s} s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=self.server.config.timeout_graceful_shutdown or 30)
        self._socket.close()


class ServerProcess:
    """`vlaforge serve CHECKPOINT ...` as a child process on a free port; stopped with SIGTERM on exit.

    Args:
        checkpoint: the checkpoint directory.
        args: further `vlaforge serve` arguments (e.g. ["--max-batch-size", "1"]).
        startup_timeout_s: how long to wait for the ready line.
        env: extra environment variables for the child.
    """

    def __init__(
        self, checkpoint: str | Path, args: list[str] = (), startup_timeout_s: float = 120.0, env: dict | None = None
    ) -> None:
        self.command = [sys.executable, "-m", "vlaforge.cli.main", "serve", str(checkpoint), "--port", "0", *args]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []  # the child's stdout and stderr lines, read so far

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.url:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + "".join(self.output[-30:]))
            time.sleep(0.02)
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if line.startswith(READY_LINE):
                self.url = re.sub(r"\s+$", "", line[len(READY_LINE) :])

    def stop(self, timeout_s: float = 60.0) -> int:
        """Sends SIGTERM and waits; kills the child if it does not exit in time. Returns its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()
