"""Measure simulation speed: Meta-World env steps per second, single env and parallel workers.

    vlaforge bench sim                          # push-v3, 224 px, corner camera
    vlaforge bench sim --image-size 112 --json  # one JSON object for the issue note

Rows: physics alone (no image); MuJoCo's default rendering quality (shadows, reflections, 4x MSAA: what
Meta-World's own `render()` uses) for comparison; our `FastRenderer` at 224 px and 112 px in one process;
and the evaluation harness itself (`run_episodes` with the scripted expert, worker processes, one batched
policy call per step), measured in steady state (from the first to the last step, so worker start-up and
env construction are excluded).
Every step of the rendered rows produces the image a policy would see. Single-env rows are timed
`--repeats` times and report the best and the median: on a machine shared with other jobs the best is the
closest to the machine's own speed, the median to what a run experiences. "steps per CPU-s" divides by the
CPU time of the process (all its threads) instead of wall time: a load-independent estimate of what one
otherwise idle core achieves (llvmpipe may use a second thread, so two free cores can do somewhat more).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import tyro


@dataclass
class Args:
    """Measure env steps/s of Meta-World with the fast offscreen renderer."""

    task: str = "push-v3"  # Meta-World task to step
    image_size: int = 224  # camera resolution of the main rows
    steps: int = 300  # timed steps per single-env row and repeat
    repeats: int = 3  # single-env rows are timed this many times; the table shows the best and the median
    default_render_steps: int = 30  # timed steps of the slow default-renderer row (0 skips it)
    workers: int = 2  # worker processes of the parallel rows
    envs: list[int] = field(default_factory=lambda: [2, 4])  # environments per parallel row
    episodes: int = 12  # episodes per parallel row
    json: bool = False  # print one JSON object instead of a table


@dataclass
class Row:
    """One measured configuration."""

    config: str  # what was measured
    steps: int  # env steps timed (per repeat)
    steps_per_s: float  # best of the repeats (least disturbed by other processes on a shared machine)
    median_steps_per_s: float  # median of the repeats
    steps_per_cpu_s: float | None = None  # steps per CPU-second of this process (all its threads): what one
    # otherwise idle core would do, whatever the load; None for the harness rows (CPU spread over processes)


def _expert_loop(env, step_fn, steps: int) -> tuple[float, float]:
    """Steps `env` with the scripted expert for `steps` steps (resetting on success or timeout)."""
    from vlaforge.sim.metaworld import MetaWorldExpert

    expert, seed = MetaWorldExpert(), 0
    privileged, length = env.reset(seed).privileged, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        privileged, success = step_fn(expert.action(env.task, privileged))
        length += 1
        if success or length >= env.max_steps:
            seed, length = seed + 1, 0
            privileged = env.reset(seed).privileged
    return time.perf_counter() - start, time.process_time() - cpu_start


class _DefaultRenderer:
    """A `mujoco.Renderer` with MuJoCo's default quality: shadows, reflections, 4x multisampling.

    This is what `env.render()` costs without our settings (gymnasium's renderer uses these defaults too).
    """

    def __init__(self, model, data, size: int) -> None:
        import mujoco

        model.vis.quality.offsamples = 4  # MuJoCo's default (our FastRenderer set it to 0 on this model)
        self._renderer = mujoco.Renderer(model, size, size)
        model.vis.quality.offsamples = 0
        self._data = data

    def render(self) -> np.ndarray:
        self._renderer.update_scene(self._data, camera="corner")
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()


def single_env_rows(args: Args) -> list[Row]:
    """Physics only, default render(), and the fast renderer at two sizes, each in this process."""
    from vlaforge.sim.metaworld import MetaWorldEnv

    rows = []
    for label, size, mode in [
        ("physics only, no image", args.image_size, "physics"),
        (f"MuJoCo default rendering, {args.image_size} px", args.image_size, "default"),
        (f"FastRenderer, {args.image_size} px", args.image_size, "fast"),
        ("FastRenderer, 112 px", 112, "fast"),
    ]:
        steps = args.default_render_steps if mode == "default" else args.steps
        if steps <= 0:
            continue
        env = MetaWorldEnv(args.task, image_size=size)
        raw = env._env  # the Meta-World env underneath, for the two comparison modes
        default = _DefaultRenderer(raw.model, raw.data, size) if mode == "default" else None

        def step(action: np.ndarray, mode: str = mode, env=env, raw=raw, default=default) -> tuple[np.ndarray, bool]:
            if mode == "fast":
                result = env.step(action)
                return result.observation.privileged, result.success
            obs, _, _, _, info = raw.step(action)
            if default is not None:
                default.render()
            return obs, bool(info["success"])

        timings = [_expert_loop(env, step, steps) for _ in range(max(1, args.repeats))]  # (wall s, CPU s)
        rates = [steps / wall for wall, _ in timings]
        per_cpu = max(steps / cpu for _, cpu in timings)
        rows.append(Row(label, steps, round(max(rates), 1), round(float(np.median(rates)), 1), round(per_cpu, 1)))
        if default is not None:
            default.close()
        env.close()
    return rows


class _StepClock:
    """An `EpisodeObserver` that counts steps and notes the first and last step times."""

    def __init__(self) -> None:
        self.steps, self.first, self.last = 0, 0.0, 0.0

    def on_start(self, job, observation) -> None:
        pass

    def on_step(self, job, action, observation) -> None:
        now = time.perf_counter()
        self.first = self.first or now
        self.last, self.steps = now, self.steps + 1

    def on_end(self, job, result) -> None:
        pass


def parallel_rows(args: Args) -> list[Row]:
    """The evaluation harness: worker processes stepping envs, one batched expert call per step."""
    from vlaforge.sim.env import EnvSpec, episode_seed
    from vlaforge.sim.policies import ExpertPolicy
    from vlaforge.sim.rollout import EpisodeJob, run_episodes

    rows = []
    spec = EnvSpec("metaworld", args.task, ("corner",), args.image_size, 500)
    jobs = [EpisodeJob(spec, i, episode_seed(0, args.task, i)) for i in range(args.episodes)]
    for num_envs in args.envs:
        clock = _StepClock()
        for _ in run_episodes(ExpertPolicy(), jobs, 4, num_envs=num_envs, num_workers=args.workers, observers=[clock]):
            pass
        rate = round((clock.steps - 1) / (clock.last - clock.first), 1)
        rows.append(
            Row(f"harness: {args.workers} workers x {num_envs} envs, {args.image_size} px", clock.steps, rate, rate)
        )
    return rows


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge bench sim`."""
    import os

    from vlaforge.sim.render import configure_gl

    args = tyro.cli(Args, args=argv, prog="vlaforge bench sim", description=__doc__)
    backend = configure_gl()
    rows = single_env_rows(args) + parallel_rows(args)
    if args.json:
        print(json.dumps({"task": args.task, "gl": backend, "cpus": os.cpu_count(), "rows": [asdict(r) for r in rows]}))
        return 0
    print(f"Meta-World {args.task}, camera 'corner', scripted expert actions, MUJOCO_GL={backend}, "
          f"{os.cpu_count()} CPUs\n")  # fmt: skip
    width = max(len(r.config) for r in rows)
    print(f"| {'configuration':<{width}} | steps/s (best) | steps/s (median) | ms/step (best) | steps per CPU-s |")
    print(f"|{'-' * (width + 2)}|---------------:|-----------------:|---------------:|----------------:|")
    for row in rows:
        per_cpu = f"{row.steps_per_cpu_s:.1f}" if row.steps_per_cpu_s else "-"
        print(
            f"| {row.config:<{width}} | {row.steps_per_s:>14.1f} | {row.median_steps_per_s:>16.1f} "
            f"| {1000 / row.steps_per_s:>14.2f} | {per_cpu:>15} |"
        )
    return 0
