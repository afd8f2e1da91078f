"""Training data: the step sampler (data parallel, resumable), synthetic samples and their labels, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.train.helpers import fast_config
from vlaforge.actions.normalize import ActionStats, normalize_actions
from vlaforge.config import ConfigError
from vlaforge.constants import IGNORE_INDEX
from vlaforge.model.vla import OpenVLA
from vlaforge.train.config import SyntheticConfig
from vlaforge.train.data import StepSampler, open_data
from vlaforge.train.loop import train


def sampler(**kwargs) -> StepSampler:
    args = {"size": 20, "batch_size": 4, "accumulation": 1, "world_size": 1, "rank": 0, "seed": 3,
            "shuffle": True, "start_step": 0, "max_steps": 12} | kwargs  # fmt: skip
    return StepSampler(**args)


def test_two_ranks_with_half_the_batch_see_the_samples_of_one_process():
    single = list(sampler())
    ranks = [list(sampler(batch_size=2, world_size=2, rank=r)) for r in (0, 1)]
    for step, whole in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == whole
    accumulated = list(sampler(batch_size=2, accumulation=2))  # 2 micro-batches per step: same samples
    assert [a + b for a, b in zip(accumulated[::2], accumulated[1::2])] == single


def test_each_epoch_is_a_permutation_and_epochs_differ():
    s = sampler()
    assert s.steps_per_epoch == 5  # 20 samples / 4
    epochs = [sum((s.step_indices(step) for step in range(e * 5, e * 5 + 5)), []) for e in (0, 1)]
    assert sorted(epochs[0]) == list(range(20)) and sorted(epochs[1]) == list(range(20))
    assert epochs[0] != epochs[1]


def test_a_sampler_started_mid_run_yields_the_tail_of_the_full_run():
    assert list(sampler(start_step=7)) == list(sampler())[7:]


def test_a_dataset_smaller_than_one_step_is_rejected():
    with pytest.raises(ConfigError, match="one optimizer step needs 8"):
        sampler(size=6, batch_size=4, world_size=2)


def test_synthetic_samples_label_the_action_tokens_and_stop_token_only(tiny_model, tmp_path):
    cfg = fast_config(tmp_path)
    data = open_data(cfg)
    data.bind(tiny_model.processor, tiny_model.config)
    sample = data.dataset[3]
    ids, labels = sample["input_ids"], sample["labels"]
    labelled = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    assert labelled == list(range(len(ids) - 8, len(ids)))  # 7 action tokens + EOS, nothing of the prompt
    assert torch.equal(labels[labelled], ids[labelled])
    assert int(ids[-1]) == tiny_model.processor.tokenizer.eos_token_id
    stats = ActionStats.from_dict(data.statistics["synthetic"]["action"])
    target = normalize_actions(data.dataset.actions[3, 0], stats)
    decoded = tiny_model.action_tokenizer.decode(ids[-8:-1].numpy())
    assert np.abs(decoded - target).max() <= 2 / 255 + 1e-9  # within one bin of the normalized action


def test_collate_right_pads_with_pad_and_ignore(tiny_model, tmp_path):
    data = open_data(fast_config(tmp_path))
    data.bind(tiny_model.processor, tiny_model.config)
    samples = [data.dataset[i] for i in range(4)]
    batch = data.collate(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    assert batch["input_ids"].shape == (4, max(lengths)) and batch["pixel_values"].shape == (4, 6, 224, 224)
    for row, length in enumerate(lengths):
        assert batch["attention_mask"][row].sum() == length
        assert (batch["input_ids"][row, length:] == tiny_model.config.pad_token_id).all()
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
    assert batch["dataset_names"] == ["synthetic"] * 4


def test_a_missing_dataset_directory_fails_before_anything_is_written(tmp_path):
    cfg = fast_config(tmp_path / "run", data__datasets=(str(tmp_path / "nope"),))
    with pytest.raises(FileNotFoundError, match="dataset path .*nope.* does not exist"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_an_unknown_model_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="neither a model preset .* nor a checkpoint directory"):
        train(fast_config(tmp_path / "run", model=str(tmp_path / "missing-checkpoint")))
    assert not (tmp_path / "run").exists()


def test_an_action_dimension_that_disagrees_with_the_model_fails_before_training(tiny_checkpoint, tmp_path):
    # tiny_checkpoint's statistics for "synthetic" are 7-D; 4-D synthetic actions under that name must not train.
    cfg = fast_config(tmp_path / "run", model=str(tiny_checkpoint))
    cfg.data.synthetic = SyntheticConfig(num_samples=8, num_tasks=2, action_dim=4)
    with pytest.raises(ConfigError, match="'synthetic' are 7-D but the dataset's actions are 4-D"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_training_on_two_lerobot_datasets_saves_statistics_for_each(tmp_path):
    from tests.data.synthetic import write_dataset

    for name, tasks in (("robot_a", ("pick the cube", "open the drawer")), ("robot_b", ("push the button",))):
        write_dataset(tmp_path / name, lengths=(5, 6), tasks=tasks)
    paths = (str(tmp_path / "robot_a"), str(tmp_path / "robot_b"))
    cfg = fast_config(tmp_path / "run", max_steps=2, data__datasets=paths, data__cameras=("corner",))
    cfg.data.tokenizer_merges = 16  # a tokenizer trained on the three instructions
    result = train(cfg)
    model = OpenVLA.from_pretrained(result.checkpoint)
    assert sorted(model.norm_stats) == ["robot_a", "robot_b"]
    assert len(model.norm_stats["robot_b"]["action"]["q01"]) == 4
    assert model.processor.tokenizer.vocab_size > 3 + 256 + 256  # learnt merges from the instructions
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    assert model.predict_action(image, "push the button", unnorm_key="robot_b").shape == (4,)


def test_datasets_with_different_action_dimensions_are_rejected(tmp_path):
    from tests.data.synthetic import episode_arrays, features, write_dataset
    from vlaforge.data.lerobot import LeRobotWriter

    write_dataset(tmp_path / "four", lengths=(4,))
    writer = LeRobotWriter(tmp_path / "six", fps=10, features=features(action_dim=6))
    writer.add_episode(episode_arrays(4, seed=0, action_dim=6), task="wave")
    writer.finalize(progress=False)
    cfg = fast_config(tmp_path / "run", data__datasets=(str(tmp_path / "four"), str(tmp_path / "six")))
    with pytest.raises(ConfigError, match="different action dimensions"):
        train(cfg)


def write_robot_dataset(root, state_dim: int, lengths=(5, 6)) -> None:
    """A LeRobot dataset with 4-D actions and a `state_dim`-D state (camera "corner", 32 px)."""
    from tests.data.synthetic import episode_arrays, features
    from vlaforge.data.lerobot import LeRobotWriter

    writer = LeRobotWriter(root, fps=10, features=features(action_dim=4, state_dim=state_dim))
    for index, length in enumerate(lengths):
        writer.add_episode(episode_arrays(length, seed=index, action_dim=4, state_dim=state_dim), task="close it")
    writer.finalize(progress=False)


def test_a_parallel_head_with_proprio_trains_on_prompt_only_samples(tmp_path):
    # The `demo` model preset reads a chunk of 4 actions in one pass and takes a 4-D state.
    write_robot_dataset(tmp_path / "robot", state_dim=4)
    cfg = fast_config(tmp_path / "run", model="demo", data__datasets=(str(tmp_path / "robot"),))
    result = train(cfg)
    assert {"loss", "lr"} <= set(result.metrics)
    data = open_data(cfg, chunk=4)
    model = OpenVLA.from_pretrained(result.checkpoint)
    data.bind(model.processor, model.config)
    sample = data.dataset[0]
    assert "labels" not in sample and sample["action_chunk"].shape == (4, 4) and sample["proprio"].shape == (4,)
    prompt = model.processor.prompts.prompt_ids("close it")
    assert sample["input_ids"].tolist() == prompt  # no action token leaks into the input


def test_a_state_dimension_that_disagrees_with_the_model_fails_before_training(tmp_path):
    write_robot_dataset(tmp_path / "robot", state_dim=3, lengths=(4,))
    cfg = fast_config(tmp_path / "run", model="demo", data__datasets=(str(tmp_path / "robot"),))
    with pytest.raises(ConfigError, match="4-D robot state .* but the dataset's state is 3-D"):
        train(cfg)
    assert not (tmp_path / "run").exists()
