"""The study's budgets: one typed config, with the full study as defaults and `--quick` as a preset.

Every arm of a comparison gets the same data, step budget, batch, learning rate, evaluation episodes and
seeds, so rows differ only in what the comparison varies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from vlaforge.sim.suites import ML45_TRAIN_TASKS
from vlaforge.study.arms import COMPARISONS


@dataclass
class StudyConfig:
    """Settings of `vlaforge study`; every field is also a flag. Defaults: the full study (hours)."""

    out: Path = Path("outputs/study")  # everything goes here: data/, seed-N/<arm>/, report.md, plots
    comparisons: tuple[str, ...] = tuple(COMPARISONS)  # which comparisons to run (their arms are trained once)
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds (model initialization and data order) per arm
    quick: bool = False  # the < 30 minute version (18 min measured): 1 seed, small budgets, shows the protocol
    # Demonstrations (scripted Meta-World experts; recorded once, shared by all seeds)
    demo_episodes: int = 100  # per task of the `demo` suite (3 tasks)
    pretrain_episodes: int = 20  # per ML45 train task (45 tasks)
    adapt_episodes: int = 10  # per held-out ML45 task (5 tasks): the "few demonstrations"
    pretrain_tasks: tuple[str, ...] = ()  # pretrain on these ML45 train tasks only; empty: all 45
    # Training budgets (optimizer steps at `batch_size`)
    train_steps: int = 1600  # demo-suite arms (the `make demo` recipe)
    pretrain_steps: int = 4000  # the ML45 pretraining
    adapt_steps: int = 600  # adaptation to the held-out tasks (and the scratch arm)
    batch_size: int = 32  # samples per step
    lr: float = 5e-4  # peak learning rate (cosine to 10% after warmup); LoRA uses the same
    lora_rank: int = 8  # LoRA rank (alpha = min(rank, 16) as the original; all linear layers)
    # Evaluation (held-out initial states: seed 7 onwards; the demos used 0..N-1)
    eval_episodes: int = 20  # per task
    max_steps: int = 250  # episode step limit (the demo suite's; bounds the cost of failing policies)
    execute_steps: int = 2  # actions of a chunk executed open loop before the model is asked again
    image_size: int = 98  # camera resolution = the demo preset's input
    threads: int = 2  # torch threads of the training runs (1 when other jobs share the cores)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.comparisons, self.seeds = tuple(self.comparisons), tuple(self.seeds)
        self.pretrain_tasks = tuple(self.pretrain_tasks)
        unknown = [key for key in self.comparisons if key not in COMPARISONS]
        if unknown:
            raise ValueError(f"unknown comparison(s) {unknown}; choose from: {', '.join(COMPARISONS)}")
        outside = [task for task in self.pretrain_tasks if task not in ML45_TRAIN_TASKS]
        if outside:
            raise ValueError(f"pretrain_tasks {outside} are not ML45 train tasks (see `vlaforge sim suites`)")
        if not self.comparisons or not self.seeds:
            raise ValueError("name at least one comparison and one seed")
        positive = (
            "demo_episodes", "pretrain_episodes", "adapt_episodes", "train_steps", "pretrain_steps", "adapt_steps",
            "batch_size", "lora_rank", "eval_episodes", "max_steps", "execute_steps", "threads",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def resolved(self) -> StudyConfig:
        """The settings that run: `--quick` replaces the budgets by the quick ones (QUICK_BUDGET)."""
        if not self.quick:
            return self
        return replace(self, **QUICK_BUDGET)

    def steps_for(self, budget: str) -> int:
        """Optimizer steps of a budget name ("main", "pretrain", "adapt")."""
        return {"main": self.train_steps, "pretrain": self.pretrain_steps, "adapt": self.adapt_steps}[budget]


# `--quick`: 18 minutes measured on the 2-core CPU (docs/results.md). Budgets this small do not separate the
# arms; they run every stage of every comparison so that the full study will not fail after hours.
QUICK_BUDGET: dict[str, object] = {
    "seeds": (0,), "demo_episodes": 20, "pretrain_episodes": 3, "adapt_episodes": 5, "train_steps": 300,
    "pretrain_steps": 200, "adapt_steps": 80, "batch_size": 16, "eval_episodes": 4,
}  # fmt: skip
