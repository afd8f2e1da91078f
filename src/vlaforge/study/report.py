"""The study's report: one markdown table per comparison (success, 95% interval, per seed, cost), and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlaforge.sim.report import wilson_interval
from vlaforge.study.arms import ARMS, COMPARISONS, Arm
from vlaforge.study.config import StudyConfig


def aggregate(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pools each arm's seeds: successes / episodes with a Wilson 95% interval, per-seed rates, mean costs."""
    rows: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["arm"] for r in results):
        mine = [r for r in results if r["arm"] == name]
        row: dict[str, Any] = {
            "seeds": [r["seed"] for r in mine], "train_seconds": float(np.mean([r["train_seconds"] for r in mine])),
            "trainable_params": mine[0]["trainable_params"], "total_params": mine[0]["total_params"],
        }  # fmt: skip
        evaluated = [r for r in mine if "episodes" in r]
        if evaluated:
            successes, episodes = sum(r["successes"] for r in evaluated), sum(r["episodes"] for r in evaluated)
            row.update(successes=successes, episodes=episodes, success_rate=successes / episodes,
                       ci95=list(wilson_interval(successes, episodes)),
                       per_seed=[r["successes"] / r["episodes"] for r in evaluated],
                       policy_ms_per_step=float(np.mean([r["policy_ms_per_step"] for r in evaluated])))  # fmt: skip
        rows[name] = row
    return rows


def _params(row: dict[str, Any]) -> str:
    if not row["total_params"]:
        return "-"
    return f"{row['trainable_params'] / 1e6:.2f}M ({row['trainable_params'] / row['total_params']:.0%})"


def comparison_table(key: str, rows: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines of one comparison: its claim, then one row per arm."""
    comparison = COMPARISONS[key]
    lines = [f"### {comparison.title}", "", f"*Published finding:* {comparison.claim}.", "",
             "| arm | what | success | 95% CI | per seed | trained params | train min | model ms / step |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in comparison.arms:
        row, arm = rows.get(name), ARMS[name]
        if row is None or "episodes" not in row:
            lines.append(f"| {name} | {arm.what} | not run | | | | | |")
            continue
        low, high = row["ci95"]
        seeds = " / ".join(f"{rate:.0%}" for rate in row["per_seed"])
        lines.append(
            f"| {name} | {arm.what} | **{row['success_rate']:.0%}** ({row['successes']}/{row['episodes']}) | "
            f"{low:.0%} - {high:.0%} | {seeds} | {_params(row)} | {row['train_seconds'] / 60:.1f} | "
            f"{row['policy_ms_per_step']:.1f} |"
        )
    return lines + [""]


def markdown(cfg: StudyConfig, rows: dict[str, dict[str, Any]], wall_seconds: float) -> str:
    """The whole report as markdown."""
    budget = (f"{cfg.train_steps} steps (demo suite), {cfg.pretrain_steps} (ML45 pretraining), {cfg.adapt_steps} "
              f"(adaptation) at batch {cfg.batch_size}; demos per task: {cfg.demo_episodes} (demo suite), "
              f"{cfg.pretrain_episodes} (ML45 train), {cfg.adapt_episodes} (held-out); {cfg.eval_episodes} "
              f"evaluation episodes per task and seed (held-out initial states), seeds {list(cfg.seeds)}")  # fmt: skip
    lines = ["# vlaforge study: the paper's comparisons in miniature on Meta-World", "",
             f"{'Quick run (budgets too small to separate the arms). ' if cfg.quick else ''}Budget: {budget}. "
             f"Wall time of this invocation: {wall_seconds / 60:.1f} min.", "",
             "Success pools all seeds; the interval is Wilson's. *Model ms / step* is the policy's compute per "
             "executed control step during evaluation (chunks cut it).", ""]  # fmt: skip
    for key in cfg.comparisons:
        lines += comparison_table(key, rows)
    lines += ["![success by comparison](success.png)", "", "![training curves](training_curves.png)", ""]
    return "\n".join(lines)


def plot_success(path: Path, cfg: StudyConfig, rows: dict[str, dict[str, Any]]) -> None:
    """One panel per comparison: success with its 95% interval per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(cfg.comparisons)
    columns = min(len(keys), 3)
    rows_ = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(3.6 * columns, 3.4 * rows_), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        names = [n for n in COMPARISONS[key].arms if "episodes" in rows.get(n, {})]
        rates = [rows[n]["success_rate"] for n in names]
        errors = [[r - rows[n]["ci95"][0] for n, r in zip(names, rates)],
                  [rows[n]["ci95"][1] - r for n, r in zip(names, rates)]]  # fmt: skip
        ax.bar(range(len(names)), rates, yerr=errors, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set(ylim=(0, 1.05), title=key, ylabel="success (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(path: Path, cfg: StudyConfig, arms: list[Arm]) -> None:
    """Training loss of every trained arm (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vlaforge.study.run import arm_dir

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in arms:
        metrics = arm_dir(cfg, cfg.seeds[0], arm) / "run" / "metrics.jsonl"
        if not arm.trains or not metrics.is_file():
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "loss" in r]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label=arm.name)
    ax.set(
        xlabel="optimizer step", ylabel="training loss", yscale="log", title=f"training curves (seed {cfg.seeds[0]})"
    )
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    cfg: StudyConfig, arms: list[Arm], results: list[dict[str, Any]], wall_seconds: float
) -> dict[str, Any]:
    """Writes report.md, report.json and the plots into `cfg.out`; prints the tables; returns the report."""
    rows = aggregate(results)
    text = markdown(cfg, rows, wall_seconds)
    (cfg.out / "report.md").write_text(text)
    report = {"config": json.loads(json.dumps(cfg.__dict__, default=str)), "arms": rows, "results": results,
              "wall_seconds": round(wall_seconds, 1)}  # fmt: skip
    (cfg.out / "report.json").write_text(json.dumps(report, indent=2))
    plot_success(cfg.out / "success.png", cfg, rows)
    plot_curves(cfg.out / "training_curves.png", cfg, arms)
    print("\n" + text + f"\nreport: {cfg.out / 'report.md'}")
    return report
