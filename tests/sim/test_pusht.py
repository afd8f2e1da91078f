"""The PushT adapter: same interface, seeded resets, bounded actions."""

from __future__ import annotations

import numpy as np
import pytest

from vlaforge.sim.env import EnvSpec, make_env
from vlaforge.sim.instructions import PUSHT_INSTRUCTIONS
from vlaforge.sim.policies import RandomPolicy
from vlaforge.sim.rollout import EpisodeJob, run_episodes
from vlaforge.sim.suites import get_suite

pytestmark = pytest.mark.sim


def test_pusht_observations_and_seeds():
    spec = get_suite("pusht").env_spec("pusht", image_size=64)
    env, other = make_env(spec), make_env(spec)
    try:
        obs = env.reset(seed=5)
        assert obs.images["top"].shape == (64, 64, 3) and obs.images["top"].dtype == np.uint8
        assert obs.state.shape == (2,) and obs.instruction in PUSHT_INSTRUCTIONS["pusht"]
        np.testing.assert_array_equal(other.reset(seed=5).image, obs.image)
        assert not np.array_equal(other.reset(seed=6).image, obs.image)
        target = obs.state + np.array([40.0, 0.0])
        for _ in range(5):
            result = env.step(target)
        assert result.observation.state[0] > obs.state[0] + 10  # the agent moved toward +x
        assert result.observation.step == 5 and isinstance(result.success, bool)
        with pytest.raises(ValueError, match="2 finite"):
            env.step(np.array([1.0, np.inf]))
    finally:
        env.close()
        other.close()
    with pytest.raises(ValueError, match="single camera"):
        make_env(EnvSpec("pusht", "pusht", ("corner",), 64, 10))


def test_pusht_runs_through_the_harness():
    suite = get_suite("pusht")
    jobs = [EpisodeJob(suite.env_spec("pusht", max_steps=5), i, i) for i in range(2)]
    policy = RandomPolicy(suite.action_low, suite.action_high, seed=0)
    results = list(run_episodes(policy, jobs, suite.action_dim, num_envs=2, num_workers=0))
    assert [r.length for r in results] == [5, 5]
