"""`PolicyService`: the server's logic without the web framework.

It owns the batcher and the safety layer, checks every request before it is batched, turns every failure
into a `ProtocolError` with the right status, and counts what happened (for /healthz). The FastAPI app in
`vlaforge.serve.app` only moves bytes between the network and this class.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlaforge.serve.batching import DynamicBatcher, ShuttingDown, Timing
from vlaforge.serve.config import ServeConfig
from vlaforge.serve.policy import BatchPolicy
from vlaforge.serve.protocol import API_VERSION, ProtocolError, Request
from vlaforge.serve.safety import SafetyLayer

log = logging.getLogger("vlaforge.serve")


@dataclass
class Counters:
    """What the server has done since it started."""

    answered: int = 0  # requests answered with actions
    refused: int = 0  # requests answered with a 4xx
    failed: int = 0  # requests answered with a 5xx
    safety_interventions: int = 0  # actions changed by the safety layer


class PolicyService:
    """Checks, batches and answers requests for one `BatchPolicy`.

    Args:
        policy: the model adapter.
        config: batching, limits, auth and safety settings.

    Raises:
        ValueError: invalid settings, or a policy not loaded with `config.quant` (the setting would be ignored).
    """

    def __init__(self, policy: BatchPolicy, config: ServeConfig) -> None:
        config.validate()
        if policy.quant != config.quant:
            raise ValueError(
                f"the settings ask for quant {config.quant!r} but the policy was loaded as {policy.quant!r}; "
                "load it with BatchPolicy.from_pretrained(path, quant=config.quant)"
            )
        self.policy = policy
        self.config = config
        self.safety = SafetyLayer(config.safety, policy.action_masks)
        self.batcher: DynamicBatcher[Request, np.ndarray] = DynamicBatcher(
            self.run_batch, config.max_batch_size, config.max_wait_ms
        )
        self.counters = Counters()
        self.draining = False  # set on shutdown: new requests get 503, in-flight ones finish
        self.inflight = 0  # requests between arrival and answer
        self.started = time.monotonic()
        self.started_cpu = time.process_time()  # CPU seconds of this process (all threads) at start

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Starts the batcher (inside the server's event loop)."""
        self.draining = False
        await self.batcher.start()

    async def drain(self, timeout_s: float) -> None:
        """Refuses new requests and waits (up to `timeout_s`) until in-flight ones are answered."""
        self.draining = True
        deadline = time.monotonic() + timeout_s
        while (self.inflight or self.batcher.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self.inflight:
            log.warning("shutdown: %d request(s) still in flight after %.1f s", self.inflight, timeout_s)

    async def stop(self) -> None:
        """Drains, then stops the batcher."""
        await self.drain(self.config.shutdown_timeout_s)
        await self.batcher.stop(timeout_s=1.0)

    # ------------------------------------------------------------------------------------------ auth
    def authorize(self, header: str | None) -> ProtocolError | None:
        """None when the `Authorization` header is acceptable, else the 401 or 403 to answer with."""
        token = self.config.token
        if token is None:
            return None
        if not header:
            return ProtocolError(401, "missing bearer token: send the header 'Authorization: Bearer <token>'")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return ProtocolError(401, "malformed Authorization header: expected 'Bearer <token>'")
        if not hmac.compare_digest(value.strip().encode("utf-8"), token.encode("utf-8")):
            return ProtocolError(403, "wrong token")
        return None

    # ------------------------------------------------------------------------------------------ serving
    async def serve(self, requests: list[Request]) -> tuple[list[np.ndarray], list[Timing]]:
        """Actions (after the safety layer) for parsed requests; raises ProtocolError for any failure.

        All requests are checked before any runs, so a bad one never reaches a batch.
        """
        if self.draining:
            raise self.refuse(ProtocolError(503, "the server is shutting down; retry in a moment"))
        try:
            for index, request in enumerate(requests):
                self._check(request, index if len(requests) > 1 else None)
        except ProtocolError as err:
            self.refuse(err)
            raise
        self.inflight += 1
        try:
            outcomes = await asyncio.gather(*(self.batcher.submit(r) for r in requests), return_exceptions=True)
        finally:
            self.inflight -= 1
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                raise self.refuse(self._as_protocol_error(outcome, index if len(requests) > 1 else None))
        self.counters.answered += len(requests)
        return [o[0] for o in outcomes], [o[1] for o in outcomes]

    def refuse(self, err: ProtocolError) -> ProtocolError:
        """Counts a refused (4xx) or failed (5xx) request; returns the error for raising."""
        if err.status >= 500:
            self.counters.failed += 1
        else:
            self.counters.refused += 1
        return err

    def _check(self, request: Request, index: int | None) -> None:
        try:
            self.policy.check(request)
            self.safety.check_state(request.state)
        except ProtocolError as err:
            raise err.of_item(index) from err
        except ValueError as err:  # the safety layer's message says what to send
            raise ProtocolError(422, str(err), "state").of_item(index) from err

    def _as_protocol_error(self, err: BaseException, index: int | None) -> ProtocolError:
        if isinstance(err, ProtocolError):
            return err.of_item(index)
        if isinstance(err, ShuttingDown):
            return ProtocolError(503, str(err))
        if isinstance(err, ValueError):  # the model refused this input (its messages say why)
            return ProtocolError(422, f"the model refused this request: {err}").of_item(index)
        log.error("inference failed", exc_info=err)
        return ProtocolError(500, f"inference failed ({type(err).__name__}: {err}); see the server log")

    def run_batch(self, requests: list[Request]) -> list[np.ndarray | BaseException]:
        """Runs on the batcher's worker thread: infer the batch, then apply the safety layer per request.

        If the batch fails, each request is retried alone, so that one bad request only fails itself.
        """
        try:
            actions: list[Any] = self.policy.infer(requests)
        except Exception as err:
            if len(requests) == 1:
                return [err]
            log.warning("a batch of %d failed (%s: %s); retrying one by one", len(requests), type(err).__name__, err)
            actions = [self._infer_alone(r) for r in requests]
        return [a if isinstance(a, BaseException) else self._limit(a, r) for a, r in zip(actions, requests)]

    def _infer_alone(self, request: Request) -> np.ndarray | BaseException:
        try:
            return self.policy.infer([request])[0]
        except Exception as err:  # returned, not raised: the batcher hands it to this request's caller
            return err

    def _limit(self, action: np.ndarray, request: Request) -> np.ndarray:
        if not self.config.safety.active:
            return action
        limited = self.safety.apply(action, request.resolved_key, request.state)
        if not np.array_equal(limited, action):
            self.counters.safety_interventions += 1
        return limited

    # ------------------------------------------------------------------------------------------ reports
    def metadata(self) -> dict[str, Any]:
        """/metadata and the websocket handshake: the model's description plus the server's settings."""
        cfg = self.config
        server = {
            "api_version": API_VERSION,
            "max_batch_size": cfg.max_batch_size,
            "max_wait_ms": cfg.max_wait_ms,
            "max_request_bytes": cfg.max_request_bytes,
            "max_instruction_chars": cfg.max_instruction_chars,
            "max_observations": cfg.max_observations,
            "auth": cfg.token is not None,
            "safety": self.safety.describe(),
        }
        return {**self.policy.metadata(), "server": server}

    def health(self) -> dict[str, Any]:
        """/healthz: liveness and counters."""
        stats = self.batcher.stats
        return {
            "status": "draining" if self.draining else "ok",
            "uptime_s": round(time.monotonic() - self.started, 3),
            "cpu_s": round(time.process_time() - self.started_cpu, 3),  # CPU time used since start
            "inflight": self.inflight,
            "queue_depth": self.batcher.queue_depth,
            "batches": stats.batches,
            "mean_batch_size": round(stats.mean_batch_size, 3),
            "largest_batch": stats.largest_batch,
            "batch_sizes": {str(k): v for k, v in sorted(stats.batch_sizes.items())},
            "busy_s": round(stats.busy_s, 3),
            **vars(self.counters),
        }
