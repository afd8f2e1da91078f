"""Evaluation reports: success rates with confidence intervals, and the files a run leaves behind.

    out/
    ├── results.json      # everything: config, per-task and overall statistics, failure reasons, video paths
    ├── results.csv       # one row per task (+ "overall"), for spreadsheets
    ├── success.png       # bar chart of per-task success with 95% intervals
    ├── episodes.jsonl    # one line per finished episode, appended as the run goes (survives a crash)
    └── videos/<task>_{success,failure}_ep<i>.mp4   # one success and one failure per task, when they occur

Files are written atomically (temporary file + rename), so an interrupted run leaves either the previous
file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.sim.env import Observation
from vlaforge.sim.rollout import EpisodeJob, EpisodeResult


def wilson_interval(successes: int, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% for z = 1.96).

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0% or 100%, which
    matters for the 10-50 episodes per task an evaluation affords.
    """
    if episodes <= 0:
        return (0.0, 1.0)
    p = successes / episodes
    denominator = 1 + z**2 / episodes
    center = (p + z**2 / (2 * episodes)) / denominator
    half = z * math.sqrt(p * (1 - p) / episodes + z**2 / (4 * episodes**2)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


def _stats(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    successes = sum(r.success for r in results)
    low, high = wilson_interval(successes, len(results))
    return {
        "episodes": len(results),
        "successes": successes,
        "success_rate": successes / len(results) if results else 0.0,
        "ci95": [round(low, 4), round(high, 4)],
        "mean_length": float(np.mean([r.length for r in results])) if results else 0.0,
    }


def summarize(results: Iterable[EpisodeResult], tasks: Sequence[str]) -> dict[str, Any]:
    """Per-task and overall statistics.

    Args:
        results: finished episodes (any order).
        tasks: the tasks in report order; tasks without episodes (an interrupted run) are reported empty.

    Returns:
        `{"tasks": {task: stats}, "overall": stats}`; stats have episodes, successes, success_rate, ci95
        (Wilson), mean_length and, per task, the failures with their reasons. `overall` pools all episodes
        and adds `mean_task_success_rate`, the unweighted mean over tasks that ran.
    """
    results = sorted(results, key=lambda r: (r.task, r.episode))
    per_task: dict[str, Any] = {}
    for task in tasks:
        mine = [r for r in results if r.task == task]
        failures = [{"episode": r.episode, "seed": r.seed, "reason": r.failure_reason} for r in mine if not r.success]
        per_task[task] = {**_stats(mine), "failures": failures}
    overall = _stats(results)
    ran = [stats["success_rate"] for stats in per_task.values() if stats["episodes"]]
    overall["mean_task_success_rate"] = float(np.mean(ran)) if ran else 0.0
    return {"tasks": per_task, "overall": overall}


def atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, report: dict[str, Any]) -> None:
    """One row per task and a final "overall" row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["task", "episodes", "successes", "success_rate", "ci95_low", "ci95_high", "mean_length"])
    rows = [*report["tasks"].items(), ("overall", report["overall"])]
    for name, stats in rows:
        low, high = stats["ci95"]
        rate, length = f"{stats['success_rate']:.4f}", f"{stats['mean_length']:.1f}"
        writer.writerow([name, stats["episodes"], stats["successes"], rate, f"{low:.4f}", f"{high:.4f}", length])
    atomic_write_text(path, buffer.getvalue())


def plot_success(path: Path, report: dict[str, Any], title: str) -> None:
    """A horizontal bar chart of per-task success rates with their 95% intervals."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(report["tasks"])
    rates = np.array([report["tasks"][t]["success_rate"] for t in names]) * 100  # [T] percent
    ci = np.array([report["tasks"][t]["ci95"] for t in names]).reshape(-1, 2) * 100  # [T, 2] percent
    errors = np.stack([rates - ci[:, 0], ci[:, 1] - rates]).clip(min=0)  # [2, T] below/above the bar
    figure = Figure(figsize=(7, 1.2 + 0.32 * len(names)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(names, rates, xerr=errors, color="#4C72B0", ecolor="#333333", capsize=3)
    overall = report["overall"]["success_rate"] * 100
    axes.axvline(overall, color="#C44E52", linestyle="--", label=f"overall {overall:.1f}%")
    axes.set_xlim(0, 100)
    axes.invert_yaxis()  # first task on top
    axes.set_xlabel("success rate (%), bars: 95% Wilson interval")
    axes.set_title(title)
    axes.legend(loc="lower right")
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    os.replace(tmp, path)


class VideoWriter:
    """Streams RGB frames into an H.264 mp4 (PyAV), so a long rollout never sits in memory.

    Args:
        path: output file.
        fps: frames per second.
    """

    def __init__(self, path: Path, fps: int) -> None:
        import av

        self.path = path
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=fps)
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "23"}
        self._started = False

    def write(self, frame: np.ndarray) -> None:
        """Appends one `[H, W, 3]` uint8 frame (all frames must have the first frame's size)."""
        import av

        height, width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2  # yuv420p needs even sizes
        if not self._started:
            self._stream.width, self._stream.height = width, height
            self._started = True
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:height, :width]), format="rgb24")
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flushes the encoder and closes the file."""
        if self._started:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()


def _frame(observation: Observation) -> np.ndarray:
    """All cameras side by side, `[H, sum W, 3]`."""
    return np.concatenate(list(observation.images.values()), axis=1)  # [H, sum W, 3]


class RolloutVideos:
    """An `EpisodeObserver` that keeps one successful and one failed rollout per task as mp4.

    Episodes of a task are recorded while that task still lacks a video of some outcome; when a recorded
    episode ends, it is kept if its outcome is still missing and deleted otherwise.

    Args:
        out_dir: where the videos go.
        fps: video frame rate.
    """

    def __init__(self, out_dir: Path, fps: int) -> None:
        self.out_dir = out_dir
        self.fps = fps
        self.saved: dict[str, dict[str, str]] = {}  # task -> {"success"|"failure": file name}
        self._open: dict[EpisodeJob, VideoWriter] = {}

    def _wanted(self, task: str) -> bool:
        return len(self.saved.get(task, {})) < 2

    def on_start(self, job: EpisodeJob, observation: Observation) -> None:
        if self._wanted(job.spec.task):
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / f".{job.spec.task}_ep{job.episode}.part.mp4"
            self._open[job] = VideoWriter(path, self.fps)
            self._open[job].write(_frame(observation))

    def on_step(self, job: EpisodeJob, action: np.ndarray, observation: Observation) -> None:
        if job in self._open:
            self._open[job].write(_frame(observation))

    def on_end(self, job: EpisodeJob, result: EpisodeResult) -> None:
        writer = self._open.pop(job, None)
        if writer is None:
            return
        writer.close()
        outcome = "success" if result.success else "failure"
        task_videos = self.saved.setdefault(job.spec.task, {})
        if outcome in task_videos or result.length == 0:
            writer.path.unlink(missing_ok=True)
            return
        final = self.out_dir / f"{job.spec.task}_{outcome}_ep{job.episode}.mp4"
        os.replace(writer.path, final)
        task_videos[outcome] = final.name

    def close(self) -> None:
        """Drops the recordings of episodes that did not finish (an interrupted run)."""
        for writer in self._open.values():
            writer.close()
            writer.path.unlink(missing_ok=True)
        self._open.clear()


def write_report(out_dir: Path, report: dict[str, Any], title: str) -> None:
    """results.json, results.csv and success.png in `out_dir`."""
    atomic_write_text(out_dir / "results.json", json.dumps(report, indent=2) + "\n")
    write_csv(out_dir / "results.csv", report)
    plot_success(out_dir / "success.png", report, title)


def format_table(report: dict[str, Any]) -> str:
    """The per-task table as aligned text (what `vlaforge eval` prints)."""
    width = max([len(t) for t in report["tasks"]] + [7])
    lines = [f"{'task':<{width}}  {'success':>9}  {'95% CI':>13}  {'mean len':>8}"]
    for name, stats in [*report["tasks"].items(), ("overall", report["overall"])]:
        low, high = stats["ci95"]
        rate = f"{stats['successes']}/{stats['episodes']}"
        lines.append(
            f"{name:<{width}}  {rate:>9}  {f'{low * 100:.0f}-{high * 100:.0f}%':>13}  {stats['mean_length']:>8.1f}"
        )
    return "\n".join(lines)


def failure_summary(report: dict[str, Any], limit: int = 5) -> list[str]:
    """The most frequent failure reasons other than running out of steps, as "N x reason" lines."""
    counts: dict[str, int] = {}
    for stats in report["tasks"].values():
        for failure in stats["failures"]:
            reason = failure["reason"] or ""
            if not reason.startswith("no success within"):
                counts[reason] = counts.get(reason, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [f"{count} x {reason}" for reason, count in ranked]
