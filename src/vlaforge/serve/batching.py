"""Dynamic batching: concurrent requests are gathered and run as one batch on one worker thread.

    caller A ─┐                      ┌─ worker thread ─────────────────────┐
    caller B ─┼─► queue ─► gather ──►│ run_batch([a, b, c]) -> [ra, rb, rc] │──► each caller's future
    caller C ─┘     up to max_batch_size items, or max_wait_ms after the first item

The first request of a batch waits at most `max_wait_ms` for company; a full batch leaves at once. While a
batch runs, new requests queue up, so under load batches fill without waiting. The model runs on a single
worker thread (one batch at a time), and the event loop stays free to read requests and write answers.
Callers that went away before their batch started (cancelled futures) are dropped from it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Timing:
    """How one request was served (reported to websocket clients)."""

    batch_size: int  # requests in the batch this one ran in
    queue_ms: float  # from submission to the start of its batch
    run_ms: float  # duration of the batch


@dataclass
class BatcherStats:
    """Counters since start, for /healthz and the benchmark."""

    batches: int = 0  # batches run
    items: int = 0  # requests answered through batches
    largest_batch: int = 0  # biggest batch so far
    busy_s: float = 0.0  # time the worker spent running batches
    batch_sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    @property
    def mean_batch_size(self) -> float:
        """Average requests per batch (0 before the first batch)."""
        return self.items / self.batches if self.batches else 0.0


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future
    submitted: float  # perf_counter() at submission


class ShuttingDown(RuntimeError):
    """The batcher stopped before the request could run."""


class DynamicBatcher(Generic[T, R]):
    """Runs `run_batch` on batches of submitted items, on one worker thread.

    Args:
        run_batch: maps a list of items to a list of the same length holding, per item, its result or the
            exception to raise in its caller (so one bad item does not fail the others).
        max_batch_size: most items per batch (1: one at a time).
        max_wait_ms: longest time the first item of a batch waits for more.
    """

    def __init__(
        self, run_batch: Callable[[list[T]], list[R | BaseException]], max_batch_size: int, max_wait_ms: float
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch_size >= 1 and max_wait_ms >= 0, got {max_batch_size}, {max_wait_ms}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1e3
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Pending[T]] | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: list[_Pending[T]] = []

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def busy(self) -> bool:
        """True while requests are queued or running."""
        return bool(self.queue_depth or self._running)

    async def start(self) -> None:
        """Starts the worker; call from the event loop that will submit."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlaforge-batch")
        self._worker = asyncio.create_task(self._work(), name="vlaforge-batcher")

    async def submit(self, item: T) -> tuple[R, Timing]:
        """Queues `item`; returns its result and timing once its batch ran (or raises its exception)."""
        if self._queue is None or self._worker is None or self._worker.done():
            raise ShuttingDown("the batcher is not running")
        pending = _Pending(item, asyncio.get_running_loop().create_future(), time.perf_counter())
        await self._queue.put(pending)
        return await pending.future

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Lets queued and running batches finish (up to `timeout_s`), then stops the worker."""
        deadline = time.monotonic() + timeout_s
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        leftovers = list(self._running)
        while self._queue is not None and not self._queue.empty():
            leftovers.append(self._queue.get_nowait())
        for pending in leftovers:
            if not pending.future.done():
                pending.future.set_exception(ShuttingDown("the server shut down before this request ran"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _next_batch(self) -> list[_Pending[T]]:
        """Waits for one item, then gathers more until the batch is full or `max_wait_s` has passed."""
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._next_batch() if not p.future.done()]  # drop callers that left
            if not batch:
                continue
            self._running = batch  # if stop() cancels us mid-batch, it fails these callers
            start = time.perf_counter()
            results = await loop.run_in_executor(self._executor, self._run, [p.item for p in batch])
            self._running = []
            self._deliver(batch, results, start, time.perf_counter())

    def _run(self, items: list[T]) -> list[Any]:
        """Calls `run_batch` on the worker thread; an exception or a wrong count fails every item."""
        try:
            results = self.run_batch(items)
        except Exception as err:  # handed to the callers, who turn it into error answers
            return [err] * len(items)
        if len(results) != len(items):
            return [RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")] * len(items)
        return results

    def _deliver(self, batch: list[_Pending[T]], results: list[Any], start: float, end: float) -> None:
        run_ms = (end - start) * 1e3
        for pending, result in zip(batch, results):
            if pending.future.done():  # the caller went away meanwhile
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                timing = Timing(len(batch), (start - pending.submitted) * 1e3, run_ms)
                pending.future.set_result((result, timing))
        stats = self.stats
        stats.batches += 1
        stats.items += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.busy_s += end - start
        stats.batch_sizes[len(batch)] = stats.batch_sizes.get(len(batch), 0) + 1
