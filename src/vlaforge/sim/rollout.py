"""Run many episodes: environments stepped in worker processes, the policy called once per step with a batch.

```
 main process                                        worker processes (spawned)
 ─────────────                                       ──────────────────────────
 jobs ──► slots 0..N-1 ──► policy.act([obs_0..obs_N-1])     slot s lives in worker s % W
             ▲                    │ [N, A] (first action of a chunk)
             │                    ▼
             └──── observations ◄── step commands ──────►  EnvHost.handle({slot: command})
```

All running environments advance in lockstep: one policy call per step for the environments whose action
chunk ran out (all of them for unchunked policies), then one message per worker carrying the actions of
its slots. Chunks are executed open loop (first N actions) or by temporal ensembling (`ChunkExecution`).
When an episode ends (success, step limit, or an error), its slot takes the next job. The schedule depends
only on the job list and the number of slots, never on timing, so a run is reproducible: the same jobs and
the same deterministic policy give the same results with any number of workers (`num_workers=0` steps
everything in this process).

Errors never stop a run. A policy that raises, or returns the wrong shape, fails the episodes of that
batch; a non-finite action fails its own episode; an environment error fails its episode. Each failure
carries its reason and is logged. Ctrl-C stops the run after the workers are shut down; results already
yielded stay valid (the caller writes a partial report).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from vlaforge.infer.chunking import ChunkExecution, ChunkExecutor
from vlaforge.sim.env import EnvSpec, Observation, SimEnv, make_env
from vlaforge.sim.policies import Policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to run."""

    spec: EnvSpec  # which environment (task, cameras, image size, step limit)
    episode: int  # index of the episode within its task
    seed: int  # initial-state seed (see `vlaforge.sim.env.episode_seed`)


@dataclass
class EpisodeResult:
    """The outcome of one episode."""

    task: str  # task name
    episode: int  # index within the task
    seed: int  # initial-state seed
    instruction: str  # the instruction the policy was given ("" if the reset failed)
    success: bool  # the task was solved (the episode stops at the first success)
    length: int  # actions executed
    total_reward: float  # sum of the environment's dense rewards
    failure_reason: str | None = None  # why it failed: step limit, policy or environment error

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


class EpisodeObserver(Protocol):
    """Sees every episode as it runs (video writers, dataset recorders)."""

    def on_start(self, job: EpisodeJob, observation: Observation) -> None:
        """The first observation after reset."""
        ...

    def on_step(self, job: EpisodeJob, action: np.ndarray, observation: Observation) -> None:
        """The `[A]` action that was executed and the observation it led to."""
        ...

    def on_end(self, job: EpisodeJob, result: EpisodeResult) -> None:
        """The episode is over."""
        ...


def validate_chunks(raw: Any, batch: int, action_dim: int) -> tuple[np.ndarray | None, str | None]:
    """Checks the shape of a policy's output and returns it as one action chunk per environment.

    Args:
        raw: what `Policy.act` returned: `[B, A]` actions or `[B, K, A]` action chunks.
        batch: B, the number of observations the policy was given.
        action_dim: A, the environments' action length.

    Returns:
        `([B, K, A] float64 chunks (K = 1 for plain actions), None)`, or `(None, reason)` for a wrong shape.
        Finiteness is checked per executed action (`finite_or_reason`): unexecuted chunk steps may be anything.
    """
    try:
        actions = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as err:
        return None, f"policy returned something that is not a numeric array: {err}"
    if actions.shape == (batch, action_dim):
        return actions[:, None], None  # [B, 1, A]
    if actions.ndim == 3 and actions.shape[0] == batch and actions.shape[1] >= 1 and actions.shape[2] == action_dim:
        return actions, None  # [B, K, A]
    expected = f"[{batch}, {action_dim}] or [{batch}, K, {action_dim}]"
    return None, f"policy returned actions of shape {list(actions.shape)}, expected {expected}"


def finite_or_reason(action: np.ndarray) -> str | None:
    """None for an executable action, else why it is not."""
    return (
        None if np.all(np.isfinite(action)) else f"policy returned a non-finite action {np.round(action, 4).tolist()}"
    )


def actions_to_execute(raw: Any, batch: int, action_dim: int) -> tuple[np.ndarray | None, list[str | None]]:
    """The first action of each environment's chunk: `([B, A] or None, per-env error or None)`."""
    chunks, reason = validate_chunks(raw, batch, action_dim)
    if chunks is None:
        return None, [reason] * batch
    return chunks[:, 0], [finite_or_reason(chunk[0]) for chunk in chunks]


# ------------------------------------------------------------------------------------------- env hosting
@dataclass
class _Reply:
    """A worker's answer for one slot."""

    observation: Observation | None = None
    reward: float = 0.0
    success: bool = False
    truncated: bool = False
    error: str | None = None


class EnvHost:
    """Owns the environments of some slots and executes commands on them (in a worker or in-process).

    Commands are `("reset", EnvSpec, seed)` and `("step", action)`. A slot keeps its environment while its
    jobs use the same `EnvSpec` and rebuilds it when the spec changes.
    """

    def __init__(self) -> None:
        self._envs: dict[int, tuple[EnvSpec, SimEnv]] = {}

    def handle(self, commands: dict[int, tuple]) -> dict[int, _Reply]:
        """Runs one command per slot; an exception becomes that slot's error reply."""
        replies = {}
        for slot, command in commands.items():
            try:
                replies[slot] = self._run(slot, command)
            except Exception as err:  # an env failure must not take the other slots down
                replies[slot] = _Reply(error=f"{type(err).__name__}: {err}")
        return replies

    def _run(self, slot: int, command: tuple) -> _Reply:
        if command[0] == "reset":
            _, spec, seed = command
            if slot in self._envs and self._envs[slot][0] != spec:
                self._envs.pop(slot)[1].close()
            if slot not in self._envs:
                self._envs[slot] = (spec, make_env(spec))
            return _Reply(observation=self._envs[slot][1].reset(seed))
        result = self._envs[slot][1].step(command[1])
        return _Reply(result.observation, result.reward, result.success, result.truncated)

    def close(self) -> None:
        """Closes every environment."""
        for _, env in self._envs.values():
            env.close()
        self._envs.clear()


def _worker_main(conn: Any) -> None:
    """A worker process: executes command batches from the main process until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process, which stops us
    host = EnvHost()
    try:
        while (commands := conn.recv()) is not None:
            conn.send(host.handle(commands))
    except (EOFError, BrokenPipeError):  # the main process went away
        pass
    finally:
        host.close()
        conn.close()


class _InlinePool:
    """All slots in this process (`num_workers=0`): simplest to debug."""

    def __init__(self) -> None:
        self._host = EnvHost()

    def run(self, commands: dict[int, tuple]) -> dict[int, _Reply]:
        return self._host.handle(commands) if commands else {}

    def close(self) -> None:
        self._host.close()


class _ProcessPool:
    """Slot `s` lives in worker `s % num_workers`; one message per busy worker per call."""

    def __init__(self, num_workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # no fork: the parent may hold torch threads
        self._conns, self._processes = [], []
        for index in range(num_workers):
            parent, child = context.Pipe()
            process = context.Process(target=_worker_main, args=(child,), name=f"vlaforge-sim-{index}", daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)

    def run(self, commands: dict[int, tuple]) -> dict[int, _Reply]:
        per_worker: dict[int, dict[int, tuple]] = {}
        for slot, command in commands.items():
            per_worker.setdefault(slot % len(self._conns), {})[slot] = command
        for worker, batch in per_worker.items():  # send everything first, so the workers run in parallel
            self._conns[worker].send(batch)
        replies: dict[int, _Reply] = {}
        for worker in per_worker:
            try:
                replies.update(self._conns[worker].recv())
            except EOFError as err:
                code = self._processes[worker].exitcode
                raise RuntimeError(f"simulation worker {worker} died (exit code {code})") from err
        return replies

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):  # the worker may already be gone
                conn.send(None)
        deadline = time.monotonic() + 10.0
        for process, conn in zip(self._processes, self._conns):
            while process.is_alive() and time.monotonic() < deadline:
                # After Ctrl-C a worker may still be sending the reply nobody will read; drain it so it can exit.
                with contextlib.suppress(EOFError, OSError):
                    if conn.poll(0.05):
                        conn.recv()
                process.join(timeout=0.05)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            conn.close()


# ------------------------------------------------------------------------------------------- lockstep loop
@dataclass
class _Running:
    """An episode in progress in one slot."""

    job: EpisodeJob
    observation: Observation
    length: int = 0
    total_reward: float = 0.0
    instruction: str = field(init=False)

    def __post_init__(self) -> None:
        self.instruction = self.observation.instruction


class _Lockstep:
    """The scheduling loop of `run_episodes` (see the module docstring)."""

    def __init__(self, policy: Policy, jobs: Sequence[EpisodeJob], num_envs: int, action_dim: int, pool: Any,
                 observers: Sequence[EpisodeObserver], chunk_execution: ChunkExecution) -> None:  # fmt: skip
        self.policy, self.pool, self.observers = policy, pool, list(observers)
        self.chunks = ChunkExecutor(chunk_execution, num_envs)  # per slot: queued actions or live chunks
        self.queue = list(jobs)
        self.num_envs, self.action_dim = num_envs, action_dim
        self.running: dict[int, _Running] = {}
        self.last_spec: dict[int, EnvSpec] = {}  # slot -> spec of its last job (the env it holds)
        self.done: list[EpisodeResult] = []

    def _finish(self, slot: int | None, job: EpisodeJob, result: EpisodeResult) -> None:
        if slot is not None:
            del self.running[slot]
        if result.failure_reason and not result.failure_reason.startswith("no success"):
            logger.warning("%s episode %d (seed %d) failed: %s", job.spec.task, job.episode, job.seed,
                           result.failure_reason)  # fmt: skip
        for observer in self.observers:
            observer.on_end(job, result)
        self.done.append(result)

    def _end(self, slot: int, success: bool, reason: str | None) -> None:
        run = self.running[slot]
        result = EpisodeResult(run.job.spec.task, run.job.episode, run.job.seed, run.instruction, success,
                               run.length, run.total_reward, reason)  # fmt: skip
        self._finish(slot, run.job, result)

    def _next_job(self, slot: int, busy: set[EnvSpec]) -> EpisodeJob:
        """The job for an idle slot: building an env costs ~0.5 s, so slots keep to one task when they can.

        Preference: a job of the slot's previous env spec; else a task no other slot is running; else the
        first job. The choice depends only on the queue and the slots' history, so it is reproducible.
        """
        choice = next((i for i, job in enumerate(self.queue) if job.spec == self.last_spec.get(slot)), None)
        if choice is None:
            choice = next((i for i, job in enumerate(self.queue) if job.spec not in busy), 0)
        job = self.queue[choice]
        del self.queue[choice]
        self.last_spec[slot] = job.spec
        return job

    def fill(self) -> None:
        """Gives every idle slot a job and resets its environment."""
        while self.queue and len(self.running) < self.num_envs:
            idle = [slot for slot in range(self.num_envs) if slot not in self.running]
            busy = {run.job.spec for run in self.running.values()}
            jobs = {}
            for slot in idle[: len(self.queue)]:
                jobs[slot] = self._next_job(slot, busy)
                busy.add(jobs[slot].spec)
            replies = self.pool.run({slot: ("reset", job.spec, job.seed) for slot, job in jobs.items()})
            for slot in sorted(jobs):
                job, reply = jobs[slot], replies[slot]
                if reply.error is not None:
                    reason = f"environment failed to reset: {reply.error}"
                    self._finish(
                        None, job, EpisodeResult(job.spec.task, job.episode, job.seed, "", False, 0, 0.0, reason)
                    )
                    continue
                self.running[slot] = _Running(job, reply.observation)
                self.chunks.reset(slot)  # a new episode: forget the previous one's chunks
                for observer in self.observers:
                    observer.on_start(job, reply.observation)

    def decide(self, slots: list[int]) -> dict[int, str]:
        """One policy call for the slots that need a new chunk; returns failure reasons per slot."""
        asking = [slot for slot in self.chunks.needs_query() if slot in slots]
        if not asking:
            return {}
        observations = [self.running[slot].observation for slot in asking]
        try:
            raw = self.policy.act(observations)
        except Exception as err:  # a broken policy fails this batch's episodes, not the evaluation
            return dict.fromkeys(asking, f"policy raised {type(err).__name__}: {err}")
        chunks, reason = validate_chunks(raw, len(asking), self.action_dim)  # [B, K, A]
        if chunks is None:
            return dict.fromkeys(asking, reason)
        for index, slot in enumerate(asking):
            self.chunks.push(slot, chunks[index])
        return {}

    def step(self) -> None:
        """One lockstep step of every running episode (the policy is asked only where a chunk ran out)."""
        slots = sorted(self.running)
        failed = self.decide(slots)
        commands = {}
        for slot in slots:
            action = None if slot in failed else self.chunks.pop(slot)
            reason = failed.get(slot) or finite_or_reason(action)
            if reason is not None:
                self._end(slot, False, reason)
            else:
                commands[slot] = ("step", action)
        replies = self.pool.run(commands)
        for slot in sorted(replies):
            run, reply = self.running[slot], replies[slot]
            if reply.error is not None:
                self._end(slot, False, f"environment error: {reply.error}")
                continue
            run.length += 1
            run.total_reward += reply.reward
            run.observation = reply.observation
            for observer in self.observers:
                observer.on_step(run.job, commands[slot][1], reply.observation)
            if reply.success:
                self._end(slot, True, None)
            elif run.length >= run.job.spec.max_steps or reply.truncated:
                self._end(slot, False, f"no success within {run.length} steps")


def run_episodes(
    policy: Policy,
    jobs: Sequence[EpisodeJob],
    action_dim: int,
    num_envs: int = 4,
    num_workers: int = 2,
    observers: Sequence[EpisodeObserver] = (),
    chunk_execution: ChunkExecution | None = None,
) -> Iterator[EpisodeResult]:
    """Runs `jobs` with `policy`, yielding each result as its episode ends (in a reproducible order).

    Args:
        policy: called once per lockstep step with up to `num_envs` observations.
        jobs: the episodes to run; keep jobs of one task together (a slot rebuilds its env on a task change).
        action_dim: A, the environments' action length (what the policy must return).
        num_envs: environments stepped together (the policy's batch size).
        num_workers: worker processes stepping them (0: in this process).
        observers: see every start, step and end (videos, demo recording).
        chunk_execution: how action chunks `[B, K, A]` are executed (default: the first action, re-plan
            every step); see `vlaforge.infer.chunking`.

    Raises:
        ValueError: for `num_envs < 1` or `num_workers < 0`.
    """
    if num_envs < 1 or num_workers < 0:
        raise ValueError(f"need num_envs >= 1 and num_workers >= 0, got {num_envs} and {num_workers}")
    if not jobs:
        return
    num_workers = min(num_workers, num_envs)
    pool = _ProcessPool(num_workers) if num_workers > 0 else _InlinePool()
    execution = chunk_execution or ChunkExecution("open-loop", execute_steps=1)
    loop = _Lockstep(policy, jobs, num_envs, action_dim, pool, observers, execution)
    try:
        loop.fill()
        while loop.running or loop.done:
            yield from loop.done
            loop.done.clear()
            if loop.running:
                loop.step()
                loop.fill()
    finally:
        pool.close()
