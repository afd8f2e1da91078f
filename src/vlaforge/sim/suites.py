"""Task suites: named lists of tasks with the settings they are evaluated with.

| suite        | tasks                                                           | used for                     |
|--------------|-----------------------------------------------------------------|------------------------------|
| `demo`       | button-press-topdown, drawer-close, window-open (112 px, 250 steps) | the CPU demo job          |
| `mt10`       | the 10 MT10 tasks                                               | multi-task evaluation        |
| `mt50`       | all 50 Meta-World tasks                                         | multi-task evaluation        |
| `ml45-train` | the 45 ML45 training tasks                                      | transfer study: train        |
| `ml45-test`  | the 5 held-out ML45 tasks                                       | transfer study: evaluate     |
| `pusht`      | PushT (gym-pusht)                                               | a cheap 2-D second env       |
| `libero_*`   | LIBERO spatial / object / goal / 10 / 90 (needs `vlaforge[libero]` + assets) | LIBERO users   |

The Meta-World task lists are written out here (not read from `metaworld`) so that listing suites does not
import the simulator; a test checks them against `metaworld`'s own MT10/ML45 definitions.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from vlaforge.sim.env import EnvFamily, EnvSpec
from vlaforge.sim.instructions import METAWORLD_INSTRUCTIONS

METAWORLD_TASKS: tuple[str, ...] = tuple(METAWORLD_INSTRUCTIONS)  # all 50, in Meta-World's own order

MT10_TASKS = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
    "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)  # fmt: skip

ML45_TEST_TASKS = ("bin-picking-v3", "box-close-v3", "hand-insert-v3", "door-lock-v3", "door-unlock-v3")
ML45_TRAIN_TASKS = tuple(task for task in METAWORLD_TASKS if task not in ML45_TEST_TASKS)

DEMO_TASKS = ("button-press-topdown-v3", "drawer-close-v3", "window-open-v3")

# LIBERO suites: name -> number of tasks. Tasks are addressed as "<suite>/<index>" and resolved by the adapter.
LIBERO_SUITES: dict[str, int] = {
    "libero_spatial": 10,
    "libero_object": 10,
    "libero_goal": 10,
    "libero_10": 10,
    "libero_90": 90,
}
# Step limits used by the original OpenVLA LIBERO evaluation (plus its 10 settling steps, added by the adapter).
LIBERO_MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520, "libero_90": 400,
}  # fmt: skip


@dataclass(frozen=True)
class Suite:
    """A named set of tasks and the environment settings they run with."""

    name: str  # the suite's name on the command line
    family: EnvFamily  # which adapter builds its environments
    tasks: tuple[str, ...]  # task names, in report order
    description: str  # one line for `--help` and reports
    max_steps: int = 500  # episode step limit (Meta-World's own limit is 500)
    image_size: int = 224  # default square camera resolution
    cameras: tuple[str, ...] = ("corner",)  # default cameras; the first is the primary one
    fps: int = 80  # control frequency in Hz (Meta-World: 5 physics steps of 2.5 ms), used for videos/datasets
    action_dim: int = 4  # A, the native action length
    action_low: tuple[float, ...] = field(default=(-1.0, -1.0, -1.0, -1.0))  # [A] lower action bounds
    action_high: tuple[float, ...] = field(default=(1.0, 1.0, 1.0, 1.0))  # [A] upper action bounds

    def env_spec(
        self,
        task: str,
        cameras: tuple[str, ...] | None = None,
        image_size: int | None = None,
        max_steps: int | None = None,
    ) -> EnvSpec:
        """The `EnvSpec` of one task of this suite, with optional overrides of the suite's defaults."""
        return EnvSpec(
            family=self.family,
            task=task,
            cameras=tuple(cameras) if cameras else self.cameras,
            image_size=image_size or self.image_size,
            max_steps=max_steps or self.max_steps,
        )


def _libero_suite(name: str, n_tasks: int) -> Suite:
    return Suite(
        name=name,
        family="libero",
        tasks=tuple(f"{name}/{i}" for i in range(n_tasks)),
        description=f"LIBERO {name.removeprefix('libero_')} ({n_tasks} tasks; needs vlaforge[libero] and the assets)",
        max_steps=LIBERO_MAX_STEPS[name],
        cameras=("agentview",),
        fps=20,
        action_dim=7,
        action_low=(-1.0,) * 7,
        action_high=(1.0,) * 7,
    )


SUITES: dict[str, Suite] = {
    "demo": Suite(
        "demo", "metaworld", DEMO_TASKS, "3 easy Meta-World tasks for the CPU demo job", max_steps=250, image_size=112
    ),
    "mt10": Suite("mt10", "metaworld", MT10_TASKS, "Meta-World MT10: 10 manipulation tasks"),
    "mt50": Suite("mt50", "metaworld", METAWORLD_TASKS, "all 50 Meta-World tasks"),
    "ml45-train": Suite("ml45-train", "metaworld", ML45_TRAIN_TASKS, "the 45 ML45 training tasks (transfer study)"),
    "ml45-test": Suite("ml45-test", "metaworld", ML45_TEST_TASKS, "the 5 held-out ML45 tasks (transfer study)"),
    "pusht": Suite(
        "pusht", "pusht", ("pusht",), "PushT (gym-pusht): push a T block onto a target, 2-D",
        max_steps=300, image_size=96, cameras=("top",), fps=10, action_dim=2,
        action_low=(0.0, 0.0), action_high=(512.0, 512.0),
    ),
    **{name: _libero_suite(name, n) for name, n in LIBERO_SUITES.items()},
}  # fmt: skip


def _family_tasks(family: EnvFamily) -> tuple[str, ...]:
    if family == "metaworld":
        return METAWORLD_TASKS
    if family == "pusht":
        return ("pusht",)
    return tuple(task for suite in SUITES.values() if suite.family == "libero" for task in suite.tasks)


def get_suite(name: str) -> Suite:
    """The suite called `name`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if name not in SUITES:
        close = difflib.get_close_matches(name, SUITES, 1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown suite '{name}'.{hint} Valid suites: {', '.join(SUITES)}")
    return SUITES[name]


def resolve_tasks(suite: Suite, tasks: list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The tasks to run: the suite's own, or `tasks` (any task of the suite's family), validated.

    Raises:
        ValueError: for an unknown task name; the message lists the valid names.
    """
    if not tasks:
        return suite.tasks
    valid = _family_tasks(suite.family)
    for task in tasks:
        if task not in valid:
            close = difflib.get_close_matches(task, valid, 3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown {suite.family} task '{task}'.{hint} Valid tasks: {', '.join(valid)}")
    return tuple(dict.fromkeys(tasks))  # de-duplicated, order kept


def validate_task(family: EnvFamily, task: str) -> None:
    """Raises ValueError, listing the valid names, if `task` is not a task of `family`."""
    resolve_tasks(Suite("", family, (), ""), [task])
