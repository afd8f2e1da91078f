"""`vlaforge sim demos`: expert episodes into a LeRobotDataset, failures dropped, resumable."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.data.lerobot import LeRobotDataset
from vlaforge.sim.demos import DemoConfig, generate_demos
from vlaforge.sim.env import EnvSpec, episode_seed, make_env
from vlaforge.sim.instructions import METAWORLD_INSTRUCTIONS
from vlaforge.sim.metaworld import MetaWorldExpert

pytestmark = pytest.mark.sim

# drawer-close takes the expert 78 steps and window-open ~85: with 82 steps, one task succeeds, one fails.
TASKS = ("drawer-close-v3", "window-open-v3")


def _config(out, episodes: int, **overrides) -> DemoConfig:
    settings = dict(out=out, tasks=TASKS, episodes_per_task=episodes, image_size=32, max_steps=82, num_envs=2,
                    num_workers=0, progress=False)  # fmt: skip
    settings.update(overrides)
    return DemoConfig(**settings)


def test_demos_keep_successes_drop_failures_and_resume(tmp_path):
    out = tmp_path / "demos"
    summary = generate_demos(_config(out, episodes=1))
    assert (summary.kept, summary.dropped, summary.total) == (1, 1, 1) and not summary.interrupted
    assert summary.dropped_episodes[0]["task"] == "window-open-v3"
    assert "within 82 steps" in summary.dropped_episodes[0]["reason"]

    resumed = generate_demos(_config(out, episodes=2))  # one more episode per task; episode 0 is not redone
    assert (resumed.skipped, resumed.kept, resumed.dropped, resumed.total) == (1, 1, 2, 2)

    dataset = LeRobotDataset(out)
    assert dataset.num_episodes == 2
    dataset.validate(decode=True)
    episode = dataset.episode(1)
    assert episode.metadata["task_name"] == "drawer-close-v3" and episode.metadata["episode"] == 1
    assert episode.task in METAWORLD_INSTRUCTIONS["drawer-close-v3"]
    frames = episode.frames("corner").read()
    assert frames.shape == (len(episode.actions), 32, 32, 3)
    # Frame t pairs the observation o_t with the expert's action from o_t: replay the seed and compare.
    env = make_env(EnvSpec("metaworld", "drawer-close-v3", ("corner",), 32, 82))
    try:
        obs = env.reset(episode_seed(0, "drawer-close-v3", 1))
        assert episode.metadata["seed"] == episode_seed(0, "drawer-close-v3", 1)
        expert = MetaWorldExpert()
        for t in range(3):
            np.testing.assert_allclose(episode.state[t], obs.state, atol=1e-6)
            action = expert.action("drawer-close-v3", obs.privileged)
            np.testing.assert_allclose(episode.actions[t], action, atol=1e-6)
            obs = env.step(action).observation
    finally:
        env.close()
    assert len(episode.actions) == 78  # stopped at the first success


def test_demos_refuse_other_settings_and_non_metaworld_suites(tmp_path):
    out = tmp_path / "demos"
    generate_demos(_config(out, episodes=1, tasks=("drawer-close-v3",)))
    with pytest.raises(ValueError):
        generate_demos(_config(out, episodes=1, tasks=("drawer-close-v3",), image_size=48))
    with pytest.raises(ValueError, match="other settings"):
        generate_demos(_config(out, episodes=1, tasks=("drawer-close-v3",), seed=1))
    with pytest.raises(ValueError, match="Meta-World suites only"):
        generate_demos(DemoConfig(out=tmp_path / "p", suite="pusht"))
