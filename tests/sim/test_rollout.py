"""The lockstep rollout engine: batched policy calls, chunks, bad policies, worker processes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.sim.conftest import SMALL, FunctionPolicy
from vlaforge.sim.env import EnvSpec, episode_seed
from vlaforge.sim.policies import ExpertPolicy, RandomPolicy
from vlaforge.sim.rollout import EpisodeJob, actions_to_execute, run_episodes

pytestmark = pytest.mark.sim


def _jobs(task: str, n: int, max_steps: int, seed: int = 0, cameras=("corner",)) -> list[EpisodeJob]:
    spec = EnvSpec("metaworld", task, cameras, SMALL, max_steps)
    return [EpisodeJob(spec, i, episode_seed(seed, task, i)) for i in range(n)]


def test_actions_to_execute_validates_shapes_and_values():
    actions, errors = actions_to_execute(np.ones((3, 4)), batch=3, action_dim=4)
    assert actions.shape == (3, 4) and errors == [None] * 3
    chunk = np.arange(3 * 5 * 4, dtype=float).reshape(3, 5, 4)  # [B, K, A]
    actions, errors = actions_to_execute(chunk, batch=3, action_dim=4)
    np.testing.assert_array_equal(actions, chunk[:, 0])  # the first action of each chunk
    actions, errors = actions_to_execute(np.ones((3, 7)), batch=3, action_dim=4)
    assert actions is None and all("shape [3, 7]" in e for e in errors)
    actions, errors = actions_to_execute(np.ones(4), batch=1, action_dim=4)  # [A] without the batch axis
    assert actions is None and "expected [1, 4]" in errors[0]
    bad = np.ones((3, 4))
    bad[1, 2] = np.nan
    actions, errors = actions_to_execute(bad, batch=3, action_dim=4)
    assert errors[0] is None and errors[2] is None and "non-finite" in errors[1]
    _, errors = actions_to_execute([[1, 2], [3]], batch=2, action_dim=2)  # ragged
    assert all("not a numeric array" in e for e in errors)


def test_policy_is_called_once_per_step_with_the_whole_batch():
    sizes = []

    def act(call, observations):
        sizes.append(len(observations))
        return np.zeros((len(observations), 4))

    results = list(run_episodes(FunctionPolicy(act), _jobs("reach-v3", 3, max_steps=4), 4, num_envs=2, num_workers=0))
    assert sorted(r.episode for r in results) == [0, 1, 2]
    assert all(r.length == 4 and not r.success and "within 4 steps" in r.failure_reason for r in results)
    assert sizes == [2, 2, 2, 2, 1, 1, 1, 1]  # 2 envs in lockstep, then the third episode alone


def test_bad_policy_outputs_fail_their_episodes_and_the_run_continues(caplog):
    def act(call, observations):
        n = len(observations)
        if call == 1:
            return np.zeros((n, 7))  # wrong action dimension: both running episodes fail
        if call == 2:
            actions = np.zeros((n, 4))
            actions[0, 0] = np.nan  # only the first slot's episode fails
            return actions
        if call == 3:
            raise RuntimeError("model exploded")
        return np.zeros((n, 4))

    jobs = _jobs("reach-v3", 6, max_steps=3)
    with caplog.at_level("WARNING"):
        results = {r.episode: r for r in run_episodes(FunctionPolicy(act), jobs, 4, num_envs=2, num_workers=0)}
    assert len(results) == 6  # every job produced a result
    assert "shape [2, 7]" in results[0].failure_reason and "shape [2, 7]" in results[1].failure_reason
    assert results[0].length == 0
    assert "non-finite" in results[2].failure_reason  # slot 0 got episode 2 after the first failure
    assert results[3].length == 1  # slot 1's episode 3 took its step on call 2 ...
    assert "model exploded" in results[3].failure_reason  # ... and failed with episode 4 on call 3
    assert "model exploded" in results[4].failure_reason
    assert results[5].length == 3 and results[5].failure_reason == "no success within 3 steps"  # ran normally
    assert "model exploded" in caplog.text and "non-finite" in caplog.text


def test_environment_errors_fail_only_their_episode():
    good = _jobs("reach-v3", 2, max_steps=2)
    broken = EpisodeJob(EnvSpec("metaworld", "reach-v3", ("no-such-camera",), SMALL, 2), 0, 1)
    results = list(run_episodes(FunctionPolicy(lambda c, o: np.zeros((len(o), 4))), [broken, *good], 4, 2, 0))
    reasons = {(r.task, r.episode, r.failure_reason.split(":")[0]) for r in results}
    assert ("reach-v3", 0, "environment failed to reset") in reasons
    assert sum(r.length == 2 for r in results) == 2


def test_chunked_policy_executes_the_first_action_of_each_chunk():
    expert = ExpertPolicy()

    def act(call, observations):
        first = expert.act(observations)  # [B, 4]
        chunk = np.full((len(observations), 3, 4), np.nan)  # [B, K, A]; executing any later action fails
        chunk[:, 0] = first
        return chunk

    [result] = run_episodes(FunctionPolicy(act), _jobs("drawer-close-v3", 1, max_steps=150), 4, 1, 0)
    assert result.success and result.failure_reason is None


def test_worker_processes_give_the_same_results_as_in_process():
    jobs = _jobs("reach-v3", 2, max_steps=6) + _jobs("push-v3", 2, max_steps=6)
    inline = list(run_episodes(RandomPolicy([-1] * 4, [1] * 4, seed=3), jobs, 4, num_envs=3, num_workers=0))
    parallel = list(run_episodes(RandomPolicy([-1] * 4, [1] * 4, seed=3), jobs, 4, num_envs=3, num_workers=2))
    assert [r.to_dict() for r in inline] == [r.to_dict() for r in parallel]
    assert len({r.total_reward for r in inline}) == 4  # distinct episodes, not a degenerate comparison


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="num_envs >= 1"):
        list(run_episodes(ExpertPolicy(), _jobs("reach-v3", 1, 2), 4, num_envs=0))


class _ChunkPolicy:
    """Returns a chunk [B, K, A] whose k-th action is (calls, k, 0, 0): shows which call and step ran."""

    name = "chunks"

    def __init__(self, k: int = 4) -> None:
        self.k, self.calls, self.batch_sizes = k, 0, []

    def act(self, observations):
        self.calls += 1
        self.batch_sizes.append(len(observations))
        chunk = np.zeros((len(observations), self.k, 4))
        chunk[:, :, 0] = self.calls
        chunk[:, :, 1] = np.arange(self.k) / 10
        return chunk

    def close(self) -> None:
        pass


class _Recorder:
    def __init__(self) -> None:
        self.actions = []

    def on_start(self, job, observation) -> None:
        pass

    def on_step(self, job, action, observation) -> None:
        self.actions.append(np.asarray(action))

    def on_end(self, job, result) -> None:
        pass


def _one_episode(steps: int):
    from vlaforge.sim.env import EnvSpec
    from vlaforge.sim.rollout import EpisodeJob

    spec = EnvSpec("metaworld", "reach-v3", cameras=("corner",), image_size=32, max_steps=steps)
    return [EpisodeJob(spec, 0, 0)]


@pytest.mark.sim
def test_open_loop_chunks_are_executed_in_order_and_the_policy_asked_less():
    from vlaforge.infer.chunking import ChunkExecution
    from vlaforge.sim.rollout import run_episodes

    policy, recorder = _ChunkPolicy(k=4), _Recorder()
    execution = ChunkExecution("open-loop", execute_steps=3)
    results = list(run_episodes(policy, _one_episode(7), 4, num_envs=1, num_workers=0, observers=[recorder],
                                chunk_execution=execution))  # fmt: skip
    assert results[0].length == 7
    assert policy.calls == 3  # steps 0-2, 3-5, 6: one call per 3 actions
    executed = [(a[0], round(a[1], 1)) for a in recorder.actions]
    assert executed == [(1, 0.0), (1, 0.1), (1, 0.2), (2, 0.0), (2, 0.1), (2, 0.2), (3, 0.0)]


@pytest.mark.sim
def test_default_execution_takes_the_first_action_and_replans_every_step():
    from vlaforge.sim.rollout import run_episodes

    policy, recorder = _ChunkPolicy(k=4), _Recorder()
    list(run_episodes(policy, _one_episode(3), 4, num_envs=1, num_workers=0, observers=[recorder]))
    assert policy.calls == 3 and all(a[1] == 0.0 for a in recorder.actions)
