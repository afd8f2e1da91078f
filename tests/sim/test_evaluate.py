"""The evaluation harness: reports, determinism, Ctrl-C, checkpoint and server policies."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import make_tiny_model
from tests.sim.conftest import SMALL, FunctionPolicy
from vlaforge.sim.evaluate import EvalConfig, evaluate, run_eval
from vlaforge.sim.policies import CheckpointPolicy, RandomPolicy, load_policy
from vlaforge.sim.report import summarize, wilson_interval
from vlaforge.sim.rollout import EpisodeResult
from vlaforge.sim.suites import get_suite

pytestmark = pytest.mark.sim

METAWORLD_4D_STATS = {"metaworld": {"action": {"q01": [-1] * 4, "q99": [1] * 4, "mask": [True] * 3 + [False]}}}


def _config(tmp_path, **overrides) -> EvalConfig:
    settings = dict(suite="demo", episodes_per_task=1, image_size=SMALL, num_envs=2, num_workers=0,
                    out=tmp_path / "eval", progress=False)  # fmt: skip
    settings.update(overrides)
    return EvalConfig(**settings)


def test_wilson_interval_matches_published_values():
    # Reference values from Wilson (1927) / Newcombe (1998), Table I: 95% intervals.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_summarize_counts_per_task_and_overall():
    results = [EpisodeResult("a", i, i, "", i < 3, 10 + i, 0.0, None if i < 3 else "timeout") for i in range(4)]
    results += [EpisodeResult("b", 0, 0, "", True, 20, 0.0)]
    report = summarize(results, tasks=["a", "b", "c"])
    assert report["tasks"]["a"]["successes"] == 3 and report["tasks"]["a"]["episodes"] == 4
    assert report["tasks"]["a"]["mean_length"] == pytest.approx(11.5)
    assert report["tasks"]["a"]["failures"] == [{"episode": 3, "seed": 3, "reason": "timeout"}]
    assert report["tasks"]["c"]["episodes"] == 0
    assert report["overall"]["success_rate"] == pytest.approx(4 / 5)
    assert report["overall"]["mean_task_success_rate"] == pytest.approx((0.75 + 1.0) / 2)


def test_expert_evaluation_writes_report_csv_plot_and_videos(tmp_path):
    import av

    config = _config(tmp_path, tasks=("drawer-close-v3", "window-open-v3"), episodes_per_task=2, max_steps=84,
                     image_size=48)  # fmt: skip
    report = run_eval("expert", config)
    out = config.out
    saved = json.loads((out / "results.json").read_text())
    assert saved["complete"] and saved["policy"] == "expert" and saved["seed"] == 7
    assert saved["tasks"]["drawer-close-v3"]["successes"] == 2  # the expert needs ~78 steps
    assert saved["tasks"]["drawer-close-v3"]["mean_length"] < 84
    assert saved["overall"]["episodes"] == 4 and report["overall"] == saved["overall"]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["task"] for r in rows] == ["drawer-close-v3", "window-open-v3", "overall"]
    assert (out / "success.png").stat().st_size > 1000
    assert len((out / "episodes.jsonl").read_text().splitlines()) == 4
    videos = saved["videos"]["drawer-close-v3"]
    assert "success" in videos and "failure" not in videos
    with av.open(str(out / "videos" / videos["success"])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    first_episode = next(json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()
                         if json.loads(line)["task"] == "drawer-close-v3" and json.loads(line)["success"])  # fmt: skip
    assert frames[0].shape == (48, 48, 3) and len(frames) == first_episode["length"] + 1  # reset + each step
    assert not list((out / "videos").glob(".*"))  # no leftover partial recordings


def test_same_seed_same_results_other_seed_other_states(tmp_path):
    def run(seed: int, name: str) -> list[dict]:
        config = _config(tmp_path, tasks=("push-v3",), episodes_per_task=3, max_steps=8, seed=seed,
                         out=tmp_path / name, videos=False)  # fmt: skip
        evaluate(RandomPolicy([-1] * 4, [1] * 4, seed=0), config)
        return [json.loads(line) for line in (config.out / "episodes.jsonl").read_text().splitlines()]

    first, again, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert first == again
    assert [e["seed"] for e in first] != [e["seed"] for e in other]
    assert [e["total_reward"] for e in first] != [e["total_reward"] for e in other]


def test_ctrl_c_leaves_a_valid_partial_report(tmp_path):
    def act(call, observations):
        if call == 12:
            raise KeyboardInterrupt
        return np.zeros((len(observations), 4))

    config = _config(tmp_path, tasks=("reach-v3",), episodes_per_task=6, max_steps=5)
    report = evaluate(FunctionPolicy(act), config)
    saved = json.loads((config.out / "results.json").read_text())
    assert saved["interrupted"] and not saved["complete"] and report["interrupted"]
    assert saved["tasks"]["reach-v3"]["episodes"] == 4  # 2 slots x 2 rounds of 5 steps finished before call 12
    assert saved["tasks"]["reach-v3"]["episodes"] == len((config.out / "episodes.jsonl").read_text().splitlines())
    assert (config.out / "results.csv").is_file() and (config.out / "success.png").is_file()
    assert not list(config.out.rglob(".*"))  # no temporary files or partial videos left behind


def test_checkpoint_policy_runs_on_metaworld(tmp_path):
    model = make_tiny_model(norm_stats=METAWORLD_4D_STATS)
    model.save_pretrained(tmp_path / "ckpt")
    config = _config(tmp_path, tasks=("drawer-close-v3",), max_steps=2, videos=False)
    report = run_eval(str(tmp_path / "ckpt"), config)
    stats = report["tasks"]["drawer-close-v3"]
    assert report["policy"] == "ckpt" and stats["episodes"] == 1
    assert stats["mean_length"] == 2 and stats["failures"][0]["reason"] == "no success within 2 steps"


def test_checkpoint_with_wrong_action_size_fails_episodes_with_a_reason(tmp_path, tiny_checkpoint):
    policy = CheckpointPolicy(tiny_checkpoint)  # the shared tiny model predicts 7-D actions
    report = evaluate(policy, _config(tmp_path, tasks=("reach-v3",), episodes_per_task=2, max_steps=3, videos=False))
    failures = report["tasks"]["reach-v3"]["failures"]
    assert len(failures) == 2 and all("shape [2, 7], expected [2, 4]" in f["reason"] for f in failures)
    assert report["complete"]


def test_server_policy_is_evaluated_through_the_client(tmp_path):
    from vlaforge.serve.app import create_app
    from vlaforge.serve.config import ServeConfig
    from vlaforge.serve.policy import BatchPolicy
    from vlaforge.serve.server import ServerThread

    policy = BatchPolicy(make_tiny_model(norm_stats=METAWORLD_4D_STATS), name="tiny-mw")
    with ServerThread(create_app(policy, ServeConfig(max_wait_ms=1.0))) as server:
        for url, name in ((server.ws_url, "ws"), (server.url, "http")):
            config = _config(tmp_path, tasks=("reach-v3",), episodes_per_task=2, max_steps=2, videos=False,
                             out=tmp_path / name)  # fmt: skip
            report = run_eval(url, config)
            stats = report["tasks"]["reach-v3"]
            assert stats["episodes"] == 2 and stats["mean_length"] == 2, stats["failures"]
            assert all(f["reason"] == "no success within 2 steps" for f in stats["failures"])


def test_unusable_policy_specs_are_explained(tmp_path):
    suite = get_suite("mt10")
    with pytest.raises(ValueError, match="checkpoint directory"):
        load_policy(str(tmp_path / "missing"), suite)
    with pytest.raises(ValueError, match="no config.json"):
        load_policy(str(tmp_path), suite)
    with pytest.raises(ValueError, match="Meta-World suites only"):
        load_policy("expert", get_suite("pusht"))
    with pytest.raises(ValueError, match="episodes_per_task"):
        EvalConfig(episodes_per_task=0)


def test_eval_config_rejects_an_unknown_quant():
    with pytest.raises(ValueError, match="unknown quantization mode 'bogus'; valid modes: fp32, bf16, int8"):
        EvalConfig(quant="bogus")  # type: ignore[arg-type]
    assert EvalConfig(quant="int8").quant == "int8"


def test_a_crash_mid_run_still_writes_the_report_then_raises(tmp_path, monkeypatch):
    import vlaforge.sim.evaluate as evaluate_module

    def dying_run(policy, jobs, *args, **kwargs):
        yield EpisodeResult(jobs[0].spec.task, 0, jobs[0].seed, "open the door", True, 12, 3.0)
        raise RuntimeError("simulation worker 1 died (exit code -11)")

    monkeypatch.setattr(evaluate_module, "run_episodes", dying_run)
    config = _config(tmp_path, tasks=("door-open-v3",), episodes_per_task=3, videos=False)
    with pytest.raises(RuntimeError, match="worker 1 died"):
        evaluate(RandomPolicy([-1] * 4, [1] * 4), config)
    saved = json.loads((config.out / "results.json").read_text())
    assert not saved["complete"] and "worker 1 died" in saved["error"]
    assert saved["tasks"]["door-open-v3"]["successes"] == 1 and saved["overall"]["episodes"] == 1


def test_failure_summary_counts_reasons_other_than_the_step_limit():
    from vlaforge.sim.report import failure_summary

    reasons = ["no success within 5 steps", "policy raised X", "policy raised X", "environment error: Y"]
    results = [EpisodeResult("a", i, i, "", False, 5, 0.0, reason) for i, reason in enumerate(reasons)]
    assert failure_summary(summarize(results, ["a"])) == ["2 x policy raised X", "1 x environment error: Y"]


def test_policy_threads_are_limited_during_the_run_and_restored(tmp_path):
    import torch

    seen = []

    def act(call, observations):
        seen.append(torch.get_num_threads())
        return np.zeros((len(observations), 4))

    before = torch.get_num_threads()
    config = _config(tmp_path, tasks=("reach-v3",), max_steps=2, videos=False, policy_threads=1)
    evaluate(FunctionPolicy(act), config)
    assert seen == [1, 1] and torch.get_num_threads() == before
