"""The dynamic batcher with a stand-in `run_batch` (no model): grouping, routing, errors, cancellation, stop.

Run: .venv/bin/pytest tests/serve/test_batching.py -q
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from vlaforge.serve.batching import DynamicBatcher, ShuttingDown


class Recorder:
    """A run_batch that records its batches and answers item -> item * 10 (or the item, if it is an error)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list] = []
        self.delay_s = delay_s
        self.release = threading.Event()
        self.release.set()

    def __call__(self, items: list) -> list:
        self.release.wait(timeout=10)
        self.batches.append(list(items))
        if self.delay_s:
            threading.Event().wait(self.delay_s)
        return [item if isinstance(item, BaseException) else item * 10 for item in items]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def test_concurrent_requests_are_batched_and_answered_in_their_own_slot():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=4, max_wait_ms=2000)
        await batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(8)))
        await batcher.stop()
        return results, batcher.stats

    results, stats = run(scenario())
    assert [value for value, _ in results] == [i * 10 for i in range(8)]
    # Full batches leave at once (no 2 s wait): 8 items -> two batches of 4.
    assert [len(b) for b in recorder.batches] == [4, 4]
    assert sorted(x for b in recorder.batches for x in b) == list(range(8))
    assert all(timing.batch_size == 4 for _, timing in results)
    assert stats.batches == 2 and stats.items == 8 and stats.largest_batch == 4 and stats.mean_batch_size == 4


@pytest.mark.parametrize(("max_wait_ms", "expected_batches"), [(0.0, [[1], [2]]), (400.0, [[1, 2]])])
def test_max_wait_decides_whether_a_late_request_joins(max_wait_ms, expected_batches):
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=8, max_wait_ms=max_wait_ms)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)  # the second request arrives 50 ms after the first
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.gather(first, second)
        await batcher.stop()

    run(scenario())
    assert recorder.batches == expected_batches


def test_max_batch_size_one_serves_one_at_a_time():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=1, max_wait_ms=50)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.stop()

    run(scenario())
    assert [len(b) for b in recorder.batches] == [1] * 5


def test_an_error_reaches_only_its_caller():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=8, max_wait_ms=100)
        await batcher.start()
        outcomes = await asyncio.gather(
            batcher.submit(1), batcher.submit(ValueError("bad item")), batcher.submit(3), return_exceptions=True
        )
        await batcher.stop()
        return outcomes

    first, second, third = run(scenario())
    assert first[0] == 10 and third[0] == 30
    assert isinstance(second, ValueError) and str(second) == "bad item"
    assert len(recorder.batches) == 1


def test_a_failing_run_batch_fails_its_batch_but_not_the_batcher():
    calls = []

    def flaky(items):
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [i * 10 for i in items]

    async def scenario():
        batcher = DynamicBatcher(flaky, max_batch_size=8, max_wait_ms=50)
        await batcher.start()
        failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        later = await batcher.submit(3)
        await batcher.stop()
        return failed, later

    failed, later = run(scenario())
    assert all(isinstance(f, RuntimeError) and "boom" in str(f) for f in failed)
    assert later[0] == 30


def test_callers_that_left_are_dropped_from_the_batch():
    recorder = Recorder()

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=8, max_wait_ms=200)
        await batcher.start()
        stays = asyncio.create_task(batcher.submit(1))
        leaves = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.02)
        leaves.cancel()  # e.g. its client disconnected while the batch was still gathering
        value, _ = await stays
        await batcher.stop()
        return value

    assert run(scenario()) == 10
    assert recorder.batches == [[1]]


def test_stop_after_its_timeout_fails_what_is_left():
    recorder = Recorder()
    recorder.release.clear()  # hold the worker inside the first batch, past the stop timeout

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        running = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0.01)
        await batcher.stop(timeout_s=0.1)
        recorder.release.set()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(ShuttingDown):
            await batcher.submit(3)
        return outcomes

    running, queued = run(scenario())
    assert isinstance(running, ShuttingDown) and isinstance(queued, ShuttingDown)


def test_stop_waits_for_queued_work_within_its_timeout():
    recorder = Recorder(delay_s=0.02)

    async def scenario():
        batcher = DynamicBatcher(recorder, max_batch_size=1, max_wait_ms=0)
        await batcher.start()
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
        await asyncio.sleep(0)
        await batcher.stop(timeout_s=10)
        return await asyncio.gather(*tasks)

    assert [value for value, _ in run(scenario())] == [0, 10, 20, 30]


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(Recorder(), max_batch_size=0, max_wait_ms=1)
