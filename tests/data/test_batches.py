import numpy as np
import pytest
import torch

from tests.data.synthetic import memory_dataset
from vlaforge.actions.normalize import ActionStats, NormalizationError, normalize_actions
from vlaforge.actions.tokenizer import ActionTokenizer
from vlaforge.config import get_preset
from vlaforge.constants import IGNORE_INDEX
from vlaforge.data.batches import (
    PaddedCollator,
    SampleBuilder,
    VLADataConfig,
    VLAFrameDataset,
    VLAMixtureDataset,
    compute_statistics,
)
from vlaforge.data.episode import DataError
from vlaforge.data.lerobot import LeRobotDataset
from vlaforge.data.tokenizer import build_tokenizer

FAST = dict(image_augmentation=False, shuffle_buffer=8)  # keeps the tests quick


@pytest.fixture(scope="module")
def setup():
    config, tokenizer = get_preset("tiny"), build_tokenizer()
    small = memory_dataset("small_robot", lengths=(6, 5), scale=0.05, seed=1)
    large = memory_dataset("large_robot", lengths=(4, 7), scale=3.0, seed=2)
    return config, tokenizer, small, large, compute_statistics([small, large], progress=False)


def builder(setup, train=False, **options):
    config, tokenizer, *_, statistics = setup
    return SampleBuilder(tokenizer, config, statistics, VLADataConfig(**{**FAST, **options}), train=train)


def test_labels_cover_only_the_action_tokens_and_the_stop_token(setup):
    config, tokenizer, small, *_ = setup
    sample = VLAFrameDataset([small], builder(setup))[3]
    labels, ids = sample["labels"], sample["input_ids"]
    labelled = torch.nonzero(labels != IGNORE_INDEX).flatten().tolist()
    assert labelled == list(range(len(ids) - 8, len(ids)))  # 7 action tokens + EOS, at the end
    assert torch.equal(labels[labelled], ids[labelled])
    assert ids[-1] == tokenizer.eos_token_id
    action_tokens = ActionTokenizer(config.vocab_end)
    assert action_tokens.is_action_token(ids[-8:-1].numpy()).all()
    assert not action_tokens.is_action_token(ids[:-8].numpy()).any()  # the prompt holds no action token
    decoded = action_tokens.decode(ids[-8:-1].numpy())
    np.testing.assert_allclose(decoded, sample["action"].numpy(), atol=2 / 255 + 1e-6)  # within one bin
    no_stop = VLAFrameDataset([small], builder(setup, predict_stop_token=False))[3]["labels"]
    assert (no_stop != IGNORE_INDEX).sum() == 7 and no_stop[-1] == IGNORE_INDEX


def test_each_dataset_is_normalized_with_its_own_statistics(setup):
    *_, small, large, statistics = setup
    data = VLAFrameDataset([small, large], builder(setup))
    assert len(data) == 6 + 5 + 4 + 7
    for index, (name, ds, episode, t) in enumerate([("small_robot", small, 1, 2), ("large_robot", large, 0, 3)]):
        position = [0, 11][index] + sum(ds.episode_lengths()[:episode]) + t
        sample = data[position]
        assert sample["dataset_name"] == name
        stats = ActionStats.from_dict(statistics[name]["action"], dataset=name)
        expected = normalize_actions(ds.episode(episode).actions[t], stats)
        np.testing.assert_allclose(sample["action"].numpy(), expected, atol=1e-6)
        assert np.all(np.abs(sample["action"].numpy()[:6]) <= 1.0)
        assert sample["action"][6] in (0.0, 1.0)  # the gripper stays raw (mask False)


def test_mixture_follows_the_weights_and_visits_every_step(setup):
    *_, small, large, _ = setup
    mixture = VLAMixtureDataset([small, large], builder(setup, shuffle_buffer=4), weights=[3.0, 1.0])
    names = [s["dataset_name"] for s, _ in zip(mixture, range(400))]
    assert 0.68 < names.count("small_robot") / len(names) < 0.82
    one_pass = VLAMixtureDataset([small, large], builder(setup, repeat=False, shuffle_buffer=5))
    seen = [(s["dataset_name"], tuple(s["action"].tolist())) for s in one_pass]
    assert len(seen) == 22 and len(set(seen)) == 22  # every step exactly once
    with pytest.raises(DataError, match="one non-negative weight per dataset"):
        VLAMixtureDataset([small, large], builder(setup), weights=[1.0])


def test_collator_pads_right_with_mask_and_ignored_labels(setup):
    config, *_ = setup
    _, _, small, *_ = setup
    data = VLAFrameDataset([small], builder(setup))
    samples = [data[0], data[6]]  # episode 0 and 1 have instructions of different lengths
    lengths = [len(s["input_ids"]) for s in samples]
    assert lengths[0] != lengths[1]
    batch = PaddedCollator(config.pad_token_id)(samples)
    width = max(lengths)
    assert batch["input_ids"].shape == (2, width) and batch["pixel_values"].shape == (2, 6, 224, 224)
    short = int(np.argmin(lengths))
    assert (batch["input_ids"][short, lengths[short] :] == config.pad_token_id).all()
    assert (batch["labels"][short, lengths[short] :] == IGNORE_INDEX).all()
    assert batch["attention_mask"][short].tolist() == [1] * lengths[short] + [0] * (width - lengths[short])
    assert torch.equal(batch["input_ids"][short, : lengths[short]], samples[short]["input_ids"])
    assert batch["dataset_names"] == ["small_robot", "small_robot"]
    with pytest.raises(ValueError, match="more than max_length"):
        PaddedCollator(config.pad_token_id, max_length=10)(samples)


def test_chunks_history_proprio_and_extra_cameras(setup):
    *_, small, _, statistics = setup
    options = dict(action_chunk=4, history=3, use_proprio=True, cameras=["main", "wrist"])
    data = VLAFrameDataset([small], builder(setup, **options))
    actions = normalize_actions(small.episode(0).actions, ActionStats.from_dict(statistics["small_robot"]["action"]))
    last = data[5]  # last step of episode 0 (length 6)
    assert last["action_chunk_mask"].tolist() == [True, False, False, False]
    np.testing.assert_allclose(last["action_chunk"].numpy(), np.repeat(actions[5:6], 4, axis=0), atol=1e-6)
    middle = data[1]
    np.testing.assert_allclose(middle["action_chunk"].numpy(), actions[1:5], atol=1e-6)
    assert middle["history_mask"].tolist() == [False, False, True]
    assert torch.equal(middle["history_pixel_values"][0], middle["history_pixel_values"][2])  # padded with frame 0
    assert torch.equal(data[0]["history_pixel_values"][2], data[0]["pixel_values"])
    late = data[4]  # t = 4: history = frames 1, 2, 3
    for h, t in enumerate((1, 2, 3)):
        assert torch.equal(late["history_pixel_values"][h], data[t]["pixel_values"])
    assert late["history_mask"].tolist() == [True, True, True]
    assert middle["extra_pixel_values"].shape == (1, 6, 224, 224) and middle["proprio"].shape == (3,)
    chunked = VLAFrameDataset([small], builder(setup, action_chunk=4, tokenize_chunk=True))[1]
    assert (chunked["labels"] != IGNORE_INDEX).sum() == 4 * 7 + 1


def test_missing_or_mismatched_statistics_fail_loud(setup):
    config, tokenizer, small, large, statistics = setup
    other = memory_dataset("unknown_robot", lengths=(3,))
    with pytest.raises(NormalizationError, match="no statistics for dataset 'unknown_robot'.*large_robot, small_robot"):
        VLAMixtureDataset([other], builder(setup))
    four = memory_dataset("small_robot", lengths=(3,), action_dim=4)
    with pytest.raises(NormalizationError, match="'small_robot'.*'action'.*4 dimensions.*statistics have 7"):
        VLAMixtureDataset([four], builder(setup))
    broken = memory_dataset("small_robot", lengths=(3,))
    broken._episodes[0]["action"][1, 2] = np.inf
    with pytest.raises(NormalizationError, match="'small_robot'.*'action'.*NaN or inf"):
        VLAMixtureDataset([broken], builder(setup))
    with pytest.raises(NormalizationError, match="'small_robot' have no 'action'"):
        SampleBuilder(tokenizer, config, {"small_robot": {"proprio": {}}})
    with pytest.raises(DataError, match="missing \\['top'\\]"):
        VLAMixtureDataset([small], builder(setup, cameras=["top"]))
    with pytest.raises(DataError, match="share the names"):
        compute_statistics([small, small], progress=False)


@pytest.mark.timeout(120)
def test_dataloader_workers_stream_a_lerobot_dataset(setup, lerobot_dataset):
    """Forked workers decode their own shards, even after the parent decoded frames (once a deadlock)."""
    config, tokenizer, *_ = setup
    root, written = lerobot_dataset
    ds = LeRobotDataset(root)
    ds.episode(0).frames("corner").read()  # the parent holds an open decoder when the workers fork
    statistics = compute_statistics([ds], progress=False)
    data = VLAMixtureDataset([ds], SampleBuilder(tokenizer, config, statistics, VLADataConfig(repeat=False)))
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2, collate_fn=PaddedCollator(515))
    batches = list(loader)
    assert sum(len(b["dataset_names"]) for b in batches) == sum(len(w["action"]) for w in written)
    actions = np.concatenate([b["action"].numpy() for b in batches])
    stats = ActionStats.from_dict(statistics["demo"]["action"])
    expected = normalize_actions(np.concatenate([w["action"] for w in written]), stats)
    np.testing.assert_allclose(np.sort(actions, axis=0), np.sort(expected, axis=0), atol=1e-6)
