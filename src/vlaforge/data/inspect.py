"""Look at a dataset: counts, rates, action ranges, idle steps, statistics, and a contact sheet PNG.

`inspect_dataset` makes one pass over the actions and states (no frames); `contact_sheet` draws a few
episodes as rows of frames next to a plot of their actions, because a glance at the data finds flipped
images, wrong cameras, dead gripper channels and units mix-ups faster than any table.

A step is idle when every action dimension except the last (the gripper, by the convention of OpenVLA,
LIBERO, Bridge and Meta-World) is below `idle_threshold` in magnitude and the gripper command did not change
from the previous step: the "no-op" steps OpenVLA filters out of its LIBERO data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.data.episode import DataError, EpisodeDataset, check_finite
from vlaforge.data.stats import RunningStats


@dataclass
class DatasetReport:
    """What `vlaforge data inspect` prints."""

    name: str  # dataset name
    num_episodes: int  # episodes
    num_frames: int  # steps over all episodes
    fps: float  # recording frequency
    cameras: dict[str, list[int]]  # camera -> [H, W, 3] of its frames
    action_dim: int  # A
    state_dim: int | None  # S, or None without state
    episode_lengths: list[int]  # min, mean, max
    tasks: dict[str, int]  # the most frequent instructions -> episode count
    num_tasks: int  # distinct instructions
    idle_fraction: float  # fraction of idle steps (see the module docstring)
    stats: dict[str, dict[str, list[float]]]  # feature -> {mean, std, min, max, q01, q99}
    warnings: list[str] = field(default_factory=list)  # things that look wrong

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def idle_steps(actions: np.ndarray, threshold: float) -> np.ndarray:
    """`[T]` bool: movement dims (all but the last) below `threshold` and the gripper unchanged."""
    if actions.shape[1] == 1:
        return np.abs(actions[:, 0]) < threshold
    still = np.max(np.abs(actions[:, :-1]), axis=1) < threshold
    gripper = actions[:, -1]
    unchanged = np.r_[True, gripper[1:] == gripper[:-1]]
    return still & unchanged


def inspect_dataset(dataset: EpisodeDataset, idle_threshold: float = 1e-3, progress: bool = True) -> DatasetReport:
    """One pass over actions and states; frames are only probed for their size."""
    from tqdm import tqdm

    actions, states = RunningStats(), RunningStats(seed=1)
    tasks: Counter[str] = Counter()
    idle, lengths = 0, []
    first = None
    bar = tqdm(iter(dataset), desc=f"inspecting {dataset.name}", total=dataset.num_episodes, disable=not progress)
    for episode in bar:  # sequential: the fast path of every format
        first = first or episode
        check_finite(episode.actions, f"{episode.where}, feature 'action'")
        actions.update(episode.actions)
        if episode.state is not None:
            states.update(episode.state)
        idle += int(idle_steps(episode.actions, idle_threshold).sum())
        lengths.append(episode.length)
        tasks[episode.task] += 1
    if first is None:
        raise DataError(f"dataset {dataset.name!r} has no episodes")
    stats = {"action": _summary(actions.result())}
    if states.count:
        stats["state"] = _summary(states.result())
    report = DatasetReport(
        name=dataset.name,
        num_episodes=dataset.num_episodes,
        num_frames=int(sum(lengths)),
        fps=float(dataset.fps),
        cameras={name: list(frames[0].shape) for name, frames in first.cameras.items()},
        action_dim=int(first.actions.shape[1]),
        state_dim=None if first.state is None else int(first.state.shape[1]),
        episode_lengths=[int(min(lengths)), float(np.mean(lengths)), int(max(lengths))],
        tasks=dict(tasks.most_common(5)),
        num_tasks=len(tasks),
        idle_fraction=idle / max(1, sum(lengths)),
        stats=stats,
    )
    report.warnings = _warnings(report)
    return report


def _summary(result: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: np.round(result[k], 6).tolist() for k in ("mean", "std", "min", "max", "q01", "q99")}


def _warnings(report: DatasetReport) -> list[str]:
    out = []
    action = report.stats["action"]
    flat = [d for d, (lo, hi) in enumerate(zip(action["q01"], action["q99"])) if lo == hi]
    if flat:
        out.append(f"action dims {flat} have q01 == q99: BOUNDS_Q99 normalization saturates them at +-1")
    if report.idle_fraction > 0.2:
        out.append(f"{report.idle_fraction:.0%} of the steps are idle; consider filtering no-op steps")
    if not report.cameras:
        out.append("the dataset has no camera; OpenVLA needs at least one image per step")
    return out


def format_report(report: DatasetReport) -> str:
    """The report as aligned text."""
    lo, mean, hi = report.episode_lengths
    lines = [
        f"dataset       {report.name}",
        f"episodes      {report.num_episodes}",
        f"frames        {report.num_frames}  (episode length min {lo}, mean {mean:.1f}, max {hi})",
        f"fps           {report.fps:g}  ({report.num_frames / max(report.fps, 1e-9) / 60:.1f} minutes of data)",
        f"cameras       {', '.join(f'{k} {v[1]}x{v[0]}' for k, v in report.cameras.items()) or '(none)'}",
        f"action dim    {report.action_dim}",
        f"state dim     {report.state_dim if report.state_dim is not None else '(none)'}",
        f"tasks         {report.num_tasks} distinct; most frequent:",
        *[f"                {count:>5} x {task}" for task, count in report.tasks.items()],
        f"idle steps    {report.idle_fraction:.1%}",
    ]
    for feature, stats in report.stats.items():
        lines.append(f"\n{feature} statistics (per dim):")
        lines.append("  " + "".join(f"{'dim ' + str(d):>11}" for d in range(len(stats["mean"]))) + "   stat")
        for key in ("min", "q01", "mean", "q99", "max", "std"):
            lines.append("  " + "".join(f"{v:>11.4g}" for v in stats[key]) + f"   {key}")
    lines += [f"\nwarning: {w}" for w in report.warnings]
    return "\n".join(lines)


def contact_sheet(
    dataset: EpisodeDataset,
    path: str | Path,
    episodes: int = 4,
    frames_per_episode: int = 6,
    camera: str | None = None,
) -> Path:
    """Draws `episodes` evenly spaced episodes as rows: frames, then the actions over time. Returns the PNG path.

    Args:
        dataset: the dataset.
        path: output PNG file.
        episodes: rows to draw.
        frames_per_episode: evenly spaced frames per row.
        camera: camera to show (default the first).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    camera = camera or (dataset.camera_names[0] if dataset.camera_names else None)
    picks = np.unique(np.linspace(0, dataset.num_episodes - 1, min(episodes, dataset.num_episodes)).round().astype(int))
    columns = frames_per_episode + 3  # the action plot spans three columns
    fig = plt.figure(figsize=(1.6 * columns, 1.9 * len(picks)), dpi=80)
    grid = fig.add_gridspec(len(picks), columns, wspace=0.05, hspace=0.45)
    for row, index in enumerate(picks):
        episode = dataset.episode(int(index))
        name = camera
        steps = np.unique(np.linspace(0, episode.length - 1, frames_per_episode).round().astype(int))
        for col, t in enumerate(steps):
            axis = fig.add_subplot(grid[row, col])
            if name is not None:
                axis.imshow(episode.frames(name)[int(t)])
            axis.set_xticks([]), axis.set_yticks([])
            axis.set_title(f"t={t}", fontsize=7)
        plot = fig.add_subplot(grid[row, frames_per_episode:])
        for dim in range(episode.actions.shape[1]):
            plot.plot(episode.actions[:, dim], linewidth=0.8, label=f"a{dim}")
        for t in steps:
            plot.axvline(t, color="grey", linewidth=0.4, linestyle="--")
        plot.tick_params(labelsize=6)
        plot.set_title(f"episode {index}: {episode.task[:60]}", fontsize=7, loc="left")
        if row == 0:
            plot.legend(fontsize=5, ncol=4, loc="upper right")
    fig.suptitle(f"{dataset.name}: {dataset.num_episodes} episodes, camera {camera}", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
