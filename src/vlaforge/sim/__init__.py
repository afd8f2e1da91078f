"""Simulation: environments behind one interface, scripted demonstrations, and the evaluation harness.

Reading order: env.py (Observation, SimEnv, EnvSpec) -> metaworld.py (+ render.py) -> suites.py ->
policies.py -> rollout.py -> evaluate.py (+ report.py) -> demos.py; pusht.py and libero.py are the other
adapters. Public API (imported lazily, so `import vlaforge.sim` does not load MuJoCo):

    Observation, StepResult, SimEnv, EnvSpec, make_env, episode_seed      # vlaforge.sim.env
    Suite, SUITES, get_suite, resolve_tasks                               # vlaforge.sim.suites
    Policy, ExpertPolicy, RandomPolicy, CheckpointPolicy, RemotePolicy, load_policy   # vlaforge.sim.policies
    EpisodeJob, EpisodeResult, run_episodes                               # vlaforge.sim.rollout
    EvalConfig, evaluate, run_eval                                        # vlaforge.sim.evaluate
    DemoConfig, generate_demos                                            # vlaforge.sim.demos
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(["Observation", "StepResult", "SimEnv", "EnvSpec", "make_env", "episode_seed"], "vlaforge.sim.env"),
    **dict.fromkeys(["Suite", "SUITES", "get_suite", "resolve_tasks"], "vlaforge.sim.suites"),
    **dict.fromkeys(
        ["Policy", "ExpertPolicy", "RandomPolicy", "CheckpointPolicy", "RemotePolicy", "load_policy"],
        "vlaforge.sim.policies",
    ),
    **dict.fromkeys(["EpisodeJob", "EpisodeResult", "run_episodes"], "vlaforge.sim.rollout"),
    **dict.fromkeys(["EvalConfig", "evaluate", "run_eval"], "vlaforge.sim.evaluate"),
    **dict.fromkeys(["DemoConfig", "generate_demos"], "vlaforge.sim.demos"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vlaforge.sim' has no attribute {name!r}")
