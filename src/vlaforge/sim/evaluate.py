"""The evaluation harness: any policy, any suite, success rates with confidence intervals.

    from vlaforge.sim import EvalConfig, evaluate, load_policy, get_suite

    config = EvalConfig(suite="mt10", episodes_per_task=10, seed=7, out=Path("eval/mt10-expert"))
    policy = load_policy("expert", get_suite("mt10"))
    report = evaluate(policy, config)           # dict, also written to config.out/results.json
    print(report["overall"]["success_rate"])

Episode `i` of task `t` starts from `episode_seed(seed, t, i)`: the same seed gives the same initial
states (and instructions), so a deterministic policy gets the same results. Demonstrations are generated
with seed 0 by default and evaluation uses seed 7, so evaluation positions are held out from the demos.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vlaforge.infer.chunking import ChunkExecution
from vlaforge.infer.quant_modes import QuantMode, check_mode
from vlaforge.sim.env import episode_seed
from vlaforge.sim.policies import Policy, load_policy
from vlaforge.sim.report import RolloutVideos, summarize, write_report
from vlaforge.sim.rollout import EpisodeJob, EpisodeResult, run_episodes
from vlaforge.sim.suites import Suite, get_suite, resolve_tasks

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to evaluate and how. Every field is also a `vlaforge eval` flag."""

    # What runs
    suite: str = "mt10"  # task suite: demo, mt10, mt50, ml45-train, ml45-test, pusht, libero_*
    tasks: tuple[str, ...] = ()  # run these tasks (of the suite's family) instead of the suite's own
    episodes_per_task: int = 10  # episodes per task
    seed: int = 7  # base seed of the initial states (demos use 0, so 7 gives held-out positions)
    # Environment overrides (None / empty: the suite's defaults)
    image_size: int | None = None  # square camera resolution in pixels
    cameras: tuple[str, ...] = ()  # cameras to render, the first is the primary one
    max_steps: int | None = None  # episode step limit
    # Policy options
    unnorm_key: str | None = None  # dataset statistics to unnormalize actions with (checkpoints, servers)
    token: str | None = None  # bearer token of a policy server (default: $VLAFORGE_SERVE_TOKEN)
    quant: QuantMode = "fp32"  # checkpoints: fp32 (as saved), bf16, int8 (fastest on CPUs), bnb-int8, nf4
    # Execution
    num_envs: int = 4  # environments stepped together = the policy's batch size
    num_workers: int = 2  # worker processes stepping environments (0: in the main process)
    policy_threads: int | None = None  # torch threads of the policy (None: CPU cores - workers, at least 1)
    # Action chunks [B, K, A]: open loop (run `execute_steps` actions, then ask again) or temporal ensembling
    chunk_execution: ChunkExecution = field(
        default_factory=lambda: ChunkExecution("open-loop", execute_steps=1)
    )  # default: the first action of each chunk, re-planning every step
    # Outputs
    out: Path | None = None  # output directory (None: return the report, write nothing)
    videos: bool = True  # keep one successful and one failed rollout per task as mp4
    progress: bool = True  # show a progress bar

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be at least 1, got {self.episodes_per_task}")
        if self.num_envs < 1 or self.num_workers < 0:
            raise ValueError(f"need num_envs >= 1 and num_workers >= 0, got {self.num_envs} and {self.num_workers}")
        if self.image_size is not None and not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be between 16 and 1024 pixels, got {self.image_size}")
        check_mode(self.quant)  # QuantizationError (a ValueError) listing the valid modes


def build_jobs(suite: Suite, config: EvalConfig, seed: int | None = None) -> list[EpisodeJob]:
    """The episodes of a run, task by task (the order reports and videos follow)."""
    tasks = resolve_tasks(suite, config.tasks)
    base = config.seed if seed is None else seed
    jobs = []
    for task in tasks:
        spec = suite.env_spec(task, config.cameras or None, config.image_size, config.max_steps)
        jobs += [EpisodeJob(spec, i, episode_seed(base, task, i)) for i in range(config.episodes_per_task)]
    return jobs


def _header(suite: Suite, config: EvalConfig, policy: Policy, tasks: tuple[str, ...]) -> dict[str, Any]:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items() if k != "token"}
    # The policy's own mode (as loaded, or as a server reports it); None for the expert and random policies.
    quant = getattr(policy, "quant", None)
    return {"suite": suite.name, "policy": policy.name, "quant": quant, "seed": config.seed,
            "tasks_run": list(tasks), "episodes_per_task": config.episodes_per_task, "config": settings}  # fmt: skip


def evaluate(policy: Policy, config: EvalConfig) -> dict[str, Any]:
    """Evaluates `policy` on `config.suite` and, with `config.out`, writes the report files.

    Returns:
        The report: header fields, `tasks` and `overall` statistics (see `vlaforge.sim.report.summarize`),
        `complete` (False after Ctrl-C: the statistics cover the finished episodes), `error` and `videos`.

    Raises:
        ValueError: for an unknown suite or task (the message lists the valid ones). Other errors (a worker
            process died) are raised after the report of the finished episodes has been written.
    """
    suite = get_suite(config.suite)
    jobs = build_jobs(suite, config)
    tasks = tuple(dict.fromkeys(job.spec.task for job in jobs))
    out = config.out
    videos = RolloutVideos(out / "videos", fps=min(suite.fps, 30)) if out is not None and config.videos else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "episodes.jsonl").write_text("")
    results: list[EpisodeResult] = []
    started = time.time()

    def finish(interrupted: bool = False, error: str | None = None) -> dict[str, Any]:
        report = {**_header(suite, config, policy, tasks), **summarize(results, tasks)}
        report.update(complete=not interrupted and error is None and len(results) == len(jobs),
                      interrupted=interrupted, error=error, duration_s=round(time.time() - started, 1),
                      videos=dict(videos.saved) if videos else {})  # fmt: skip
        if out is not None:
            label = policy.name if report["quant"] in (None, "fp32") else f"{policy.name} ({report['quant']})"
            title = f"{label} on {suite.name} ({config.episodes_per_task} ep/task, seed {config.seed})"
            write_report(out, report, title=title)
        return report

    try:
        with _torch_threads(config):
            _collect(policy, suite, config, jobs, videos, results)
    except KeyboardInterrupt:
        logger.warning("interrupted: the report covers the %d finished episodes", len(results))
        return finish(interrupted=True)
    except Exception as err:  # e.g. a worker process died: keep what was measured, then re-raise
        finish(error=f"{type(err).__name__}: {err}")
        raise
    return finish()


@contextlib.contextmanager
def _torch_threads(config: EvalConfig) -> Iterator[None]:
    """Limits torch's threads while the workers render, restoring the setting afterwards.

    Measured on 2 cores with 2 workers: a tiny checkpoint took 40 ms per batched call with 1 thread and 400 ms
    with 2 (the threads' barriers wait on cores the renderers hold). Nothing happens when torch is not loaded.
    """
    torch = sys.modules.get("torch")
    if torch is None or (config.policy_threads is None and config.num_workers == 0):
        yield
        return
    previous = torch.get_num_threads()
    wanted = config.policy_threads or max(1, (os.cpu_count() or 1) - config.num_workers)
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _collect(policy: Policy, suite: Suite, config: EvalConfig, jobs: list[EpisodeJob],
             videos: RolloutVideos | None, results: list[EpisodeResult]) -> None:  # fmt: skip
    """Runs the episodes, appending each result to `results` (and to episodes.jsonl) as it finishes."""
    bar = tqdm(total=len(jobs), desc=f"eval {suite.name}", unit="ep", disable=not config.progress)
    episodes = run_episodes(policy, jobs, suite.action_dim, config.num_envs, config.num_workers,
                            observers=[videos] if videos else [],
                            chunk_execution=config.chunk_execution)  # fmt: skip
    try:
        for result in episodes:
            results.append(result)
            if config.out is not None:
                with open(config.out / "episodes.jsonl", "a") as f:
                    f.write(json.dumps(result.to_dict()) + "\n")
            bar.update(1)
            bar.set_postfix(success=f"{sum(r.success for r in results) / len(results):.0%}")
    finally:
        episodes.close()  # stops the workers (also after Ctrl-C)
        bar.close()
        if videos is not None:
            videos.close()  # drops recordings of unfinished episodes


def run_eval(policy_spec: str, config: EvalConfig) -> dict[str, Any]:
    """Loads the policy `policy_spec` names ("expert", "random", checkpoint dir, server URL) and evaluates it."""
    suite = get_suite(config.suite)
    resolve_tasks(suite, config.tasks)  # fail on a bad task name before loading a model
    token = config.token or os.environ.get("VLAFORGE_SERVE_TOKEN")  # the variable `vlaforge serve` reads too
    policy = load_policy(
        policy_spec, suite, unnorm_key=config.unnorm_key, token=token, seed=config.seed, quant=config.quant
    )
    try:
        return evaluate(policy, config)
    finally:
        policy.close()
