"""The training loop: learning, checkpoints, loss on action tokens only, frozen towers, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.train.helpers import fast_config
from vlaforge.config import ConfigError
from vlaforge.constants import IGNORE_INDEX, STATS_NAME
from vlaforge.model.vla import OpenVLA
from vlaforge.train.checkpoint import latest_checkpoint, list_checkpoints
from vlaforge.train.config import SyntheticConfig, TrainConfig
from vlaforge.train.distributed import init_distributed
from vlaforge.train.loop import build_run, train, train_step


def weights(checkpoint) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_full_training_learns_and_writes_loadable_checkpoints(tmp_path):
    cfg = fast_config(tmp_path / "run", max_steps=8, save_every=2, keep_last=2, optim__lr=1e-3, tensorboard=True)
    cfg.data.synthetic = SyntheticConfig(num_samples=4, num_tasks=2)
    result = train(cfg)
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-000008" and result.step == 8
    assert [step for step, _ in list_checkpoints(cfg.output_dir)] == [6, 8]  # keep_last=2
    losses = [m["loss"] for m in metrics(tmp_path / "run")]
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2])  # it learns the 4 samples
    assert set(result.metrics) >= {"loss", "action_accuracy", "l1", "lr", "step_time_s", "samples_per_s"}
    model = OpenVLA.from_pretrained(result.checkpoint)  # the OpenVLA checkpoint format, with statistics
    assert json.loads((result.checkpoint / STATS_NAME).read_text()).keys() == {"synthetic"}
    assert TrainConfig.load(result.checkpoint) == cfg
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    action = model.predict_action(np.zeros((32, 32, 3), dtype=np.uint8), "open the drawer")
    assert action.shape == (7,) and np.isfinite(action).all()


def test_the_loss_has_gradient_only_at_positions_that_predict_action_or_stop_tokens(tmp_path):
    run = build_run(fast_config(tmp_path / "run"), init_distributed("none"))
    batch = next(run.batches)
    grads = []

    def keep_logits_grad(_module, _inputs, logits):
        logits.register_hook(lambda grad: grads.append(grad.detach().clone()))

    hook = run.module.language_model.lm_head.register_forward_hook(keep_logits_grad)
    try:
        train_step(run, [batch])
    finally:
        hook.remove()
    n_patches = run.module.vision_backbone.num_patches
    labels = batch["labels"]  # [B, T]
    expected = torch.zeros(grads[0].shape[:2], dtype=torch.bool)  # [B, S]: which logits rows may get gradient
    for row, col in (labels != IGNORE_INDEX).nonzero().tolist():
        expected[row, n_patches + col - 1] = True  # the logits at s predict the token at s + 1
    has_grad = grads[0].abs().sum(-1) > 0  # [B, S]
    assert torch.equal(has_grad, expected)
    assert int(expected.sum()) == 8 * labels.shape[0]  # 7 action tokens + EOS per sample, no prompt token


def test_frozen_vision_mode_keeps_the_towers_and_trains_the_rest(tmp_path):
    cfg = fast_config(tmp_path / "run", mode="frozen-vision", optim__lr=1e-3)
    run = build_run(cfg, init_distributed("none"))
    before = {k: v.clone() for k, v in run.module.state_dict().items()}
    train_step(run, [next(run.batches)])
    after = run.module.state_dict()
    vision = [k for k in before if k.startswith("vision_backbone.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert not torch.equal(before["projector.fc1.weight"], after["projector.fc1.weight"])
    up = "language_model.model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(before[up], after[up])


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    def config(name, max_steps):  # accumulation, warmup + cosine, shuffling over an epoch boundary
        cfg = fast_config(tmp_path / name, max_steps=max_steps, save_every=2, batch_size=1, grad_accumulation=2)
        cfg.optim.schedule, cfg.optim.decay_steps, cfg.optim.warmup_steps, cfg.optim.max_grad_norm = "cosine", 4, 1, 0.5
        cfg.data.synthetic = SyntheticConfig(num_samples=6, num_tasks=2)  # 3 steps per epoch
        return cfg

    straight = train(config("straight", 4))
    train(config("resumed", 2))
    partial = tmp_path / "resumed" / "checkpoints" / "step-000004.tmp"  # as left by a kill during a save
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"truncated")
    assert latest_checkpoint(tmp_path / "resumed").name == "step-000002"

    changed = config("resumed", 4)
    changed.resume, changed.optim.lr = True, 1e-3
    with pytest.raises(ConfigError, match="optim.lr: 0.0003 -> 0.001"):
        train(changed)
    resume = config("resumed", 4)
    resume.resume = True
    resumed = train(resume)
    assert not partial.exists()
    assert resumed.checkpoint.name == straight.checkpoint.name == "step-000004"
    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = weights(tmp_path / "straight" / "checkpoints" / "step-000002")
    assert any(not torch.equal(a[k], first[k]) for k in a)  # steps 3-4 did change the weights


@pytest.mark.slow
@pytest.mark.sim
def test_periodic_in_sim_evaluation_logs_success_rates(tmp_path):
    cfg = fast_config(tmp_path / "run", save_every=2, tensorboard=True)
    cfg.data.synthetic = SyntheticConfig(num_samples=8, num_tasks=2, action_dim=4)  # Meta-World's 4-D actions
    cfg.sim_eval.every, cfg.sim_eval.tasks, cfg.sim_eval.episodes = 2, ("drawer-close-v3",), 1
    cfg.sim_eval.max_steps, cfg.sim_eval.num_envs = 3, 1
    result = train(cfg)
    evals = [m["eval"] for m in metrics(tmp_path / "run") if "eval" in m]
    assert evals == [{"success_rate": 0.0, "success_rate/drawer-close-v3": 0.0}]  # 3 steps cannot close it
    episodes = (result.checkpoint / "eval" / "episodes.jsonl").read_text().splitlines()
    assert len(episodes) == 1 and json.loads(episodes[0])["length"] == 3  # the policy's actions were executed
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
