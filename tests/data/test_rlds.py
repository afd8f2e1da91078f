"""RLDS (TFDS) reading and RLDS -> LeRobot conversion, on a small dataset the test builds itself.

Runs in the tensorflow venv: `make test-rlds` (it imports no torch and sets VLAFORGE_REQUIRE_RLDS=1, so a
missing tensorflow fails there instead of skipping).
"""

import os

import numpy as np
import pytest

if os.environ.get("VLAFORGE_REQUIRE_RLDS"):
    import tensorflow_datasets as tfds
else:
    tfds = pytest.importorskip("tensorflow_datasets", reason="RLDS tests run in `make test-rlds`")

from tests.data.synthetic import smooth_frames  # noqa: E402
from vlaforge.data.convert import convert_to_lerobot  # noqa: E402
from vlaforge.data.episode import DataError  # noqa: E402
from vlaforge.data.lerobot import LeRobotDataset  # noqa: E402
from vlaforge.data.rlds import RLDSDataset  # noqa: E402
from vlaforge.data.sources import open_dataset  # noqa: E402

LENGTHS = (6, 8, 7)
SIZE = 32


def raw_episode(index: int, length: int) -> dict:
    """A Bridge-like episode: state trajectory, raw actions with a continuous gripper, an instruction."""
    rng = np.random.default_rng(index)
    state = np.cumsum(rng.normal(0, 0.01, (length, 7)), axis=0).astype(np.float32)
    action = rng.normal(0, 0.02, (length, 7)).astype(np.float32)
    action[:, 6] = np.linspace(1.0, 0.0, length)  # opens -> closes, with values in between
    action[0] = 0.0  # bridge's first step is all zeros
    frames = smooth_frames(length, SIZE, index)
    steps = [
        {
            "observation": {"image_0": frames[t], "state": state[t]},
            "action": action[t],
            "language_instruction": f"put the spoon in pot {index}",
            "is_first": t == 0,
            "is_last": t == length - 1,
            "is_terminal": t == length - 1,
            "reward": float(t == length - 1),
            "discount": 1.0,
        }
        for t in range(length)
    ]
    return {"steps": steps, "episode_metadata": {"file_path": f"raw/episode_{index}.npy"}}


class BridgeOrig(tfds.core.GeneratorBasedBuilder):
    """A 3-episode dataset in the layout of OpenVLA's `bridge_orig` (named so: the builder name selects it)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        step = tfds.features.FeaturesDict(
            {
                "observation": tfds.features.FeaturesDict(
                    {
                        "image_0": tfds.features.Image(shape=(SIZE, SIZE, 3), encoding_format="png"),
                        "state": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                    }
                ),
                "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
                "language_instruction": tfds.features.Text(),
                "is_first": np.bool_,
                "is_last": np.bool_,
                "is_terminal": np.bool_,
                "reward": np.float32,
                "discount": np.float32,
            }
        )
        features = {"steps": tfds.features.Dataset(step), "episode_metadata": {"file_path": tfds.features.Text()}}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for index, length in enumerate(LENGTHS):
            yield f"episode_{index}", raw_episode(index, length)


@pytest.fixture(scope="module")
def rlds_dir(tmp_path_factory):
    builder = BridgeOrig(data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare()
    return builder.data_dir


def expected(index: int, length: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Bridge standardization computed by hand: drop step 0, movement = state deltas, binarized gripper."""
    raw = raw_episode(index, length)
    state = np.stack([s["observation"]["state"] for s in raw["steps"]])[1:]  # after dropping step 0
    gripper = np.stack([s["action"][6] for s in raw["steps"]])[1:]
    settled = np.where(gripper > 0.95, 1.0, np.where(gripper < 0.05, 0.0, np.nan))
    for t in range(len(settled) - 2, -1, -1):  # in-between values take the next settled state
        if np.isnan(settled[t]):
            settled[t] = settled[t + 1]
    movement = state[1:, :6] - state[:-1, :6]
    actions = np.concatenate([movement, settled[:-1, None]], axis=1).astype(np.float32)
    frames = smooth_frames(length, SIZE, index)[1:-1]
    return actions, frames, f"put the spoon in pot {index}"


def raw_index(metadata: dict) -> int:
    """TFDS stores examples in its own order; the file path tells which raw episode this is."""
    return int(metadata["file_path"].split("_")[-1].split(".")[0])


def test_rlds_episodes_are_standardized_like_openvla(rlds_dir):
    ds = open_dataset(rlds_dir)
    assert isinstance(ds, RLDSDataset) and ds.name == "bridge_orig" and ds.fps == 5.0
    assert ds.num_episodes == 3
    seen = []
    for episode in ds:
        index = raw_index(episode.metadata)
        actions, frames, task = expected(index, LENGTHS[index])
        np.testing.assert_allclose(episode.actions, actions, atol=1e-6)
        assert set(np.unique(episode.actions[:, 6])) <= {0.0, 1.0}
        np.testing.assert_array_equal(episode.frames("primary").read(), frames)  # PNG in TFRecords: lossless
        assert episode.task == task
        assert episode.state.shape == (LENGTHS[index] - 2, 7)
        seen.append(index)
    assert sorted(seen) == [0, 1, 2]
    assert ds.episode_lengths() == [LENGTHS[i] - 2 for i in seen]
    second = ds.episode(1)  # random access reads the same episode as iteration
    np.testing.assert_allclose(second.actions, expected(seen[1], LENGTHS[seen[1]])[0], atol=1e-6)


def test_rlds_converts_to_lerobot(rlds_dir, tmp_path):
    source = RLDSDataset(rlds_dir)
    convert_to_lerobot(source, tmp_path / "bridge", progress=False)
    back = LeRobotDataset(tmp_path / "bridge")
    assert back.num_episodes == 3 and back.fps == 5.0 and back.camera_names == ["primary"]
    for episode, original in zip((back.episode(i) for i in range(3)), source):
        index = raw_index(original.metadata)
        actions, frames, task = expected(index, LENGTHS[index])
        np.testing.assert_array_equal(episode.actions, original.actions)  # float32 written and read exactly
        np.testing.assert_allclose(episode.actions, actions, atol=1e-6)
        np.testing.assert_array_equal(episode.state, original.state)
        decoded = episode.frames("primary").read().astype(np.int16)
        assert np.abs(decoded - frames).mean() < 2.5 and np.abs(decoded - frames).max() <= 40
        assert episode.task == task
        assert episode.metadata["source"] == "bridge_orig"
        assert episode.metadata["file_path"] == original.metadata["file_path"]


def test_a_missing_split_names_the_dataset(rlds_dir):
    with pytest.raises(DataError, match="has no split 'validation'"):
        RLDSDataset(rlds_dir, split="validation")
