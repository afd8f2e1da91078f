import json

import h5py
import numpy as np
import pytest

from tests.data.synthetic import smooth_frames
from vlaforge.data.convert import convert_to_lerobot, lerobot_features
from vlaforge.data.episode import DataError
from vlaforge.data.hdf5 import HDF5Dataset
from vlaforge.data.lerobot import LeRobotDataset, LeRobotWriter
from vlaforge.data.sources import detect_format, open_dataset

LENGTHS = (6, 4, 5)


def write_libero_file(path, lengths=LENGTHS, instruction="put the bowl on the plate", size=32):
    """A file in LIBERO's layout; returns the arrays written per demo."""
    written = []
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if instruction is not None:
            data.attrs["problem_info"] = json.dumps({"language_instruction": instruction, "domain_name": "x"})
        for index, length in enumerate(lengths):
            rng = np.random.default_rng(index)
            demo = data.create_group(f"demo_{index}")
            arrays = {
                "actions": rng.uniform(-1, 1, (length, 7)),
                "states": rng.normal(size=(length, 9)),
                "obs/agentview_rgb": smooth_frames(length, size, index),
                "obs/eye_in_hand_rgb": smooth_frames(length, size, index + 7),
                "obs/ee_pos": rng.normal(size=(length, 3)),
                "obs/gripper_states": rng.normal(size=(length, 2)),
            }
            for key, value in arrays.items():
                demo.create_dataset(key, data=value)
            demo.attrs["num_samples"] = length
            written.append(arrays)
    return written


def test_reads_episodes_in_demo_order_with_language_from_the_attributes(tmp_path):
    path = tmp_path / "libero_task.hdf5"
    written = write_libero_file(path)
    ds = open_dataset(path)
    assert isinstance(ds, HDF5Dataset) and detect_format(path) == "hdf5"
    assert (ds.name, ds.num_episodes, ds.episode_lengths(), ds.fps) == ("libero_task", 3, list(LENGTHS), 20.0)
    assert ds.camera_names == ["agentview_rgb", "eye_in_hand_rgb"]
    for index, arrays in enumerate(written):
        episode = ds.episode(index)
        assert episode.task == "put the bowl on the plate"
        np.testing.assert_array_equal(episode.actions, arrays["actions"].astype(np.float32))
        np.testing.assert_array_equal(episode.state, arrays["states"].astype(np.float32))
        np.testing.assert_array_equal(episode.frames("agentview_rgb").read(), arrays["obs/agentview_rgb"])
        np.testing.assert_array_equal(episode.frames("eye_in_hand_rgb")[2], arrays["obs/eye_in_hand_rgb"][2])
        assert episode.metadata == {"num_samples": LENGTHS[index]}


def test_options_state_keys_flip_cameras_and_task(tmp_path):
    path = tmp_path / "demo.hdf5"
    written = write_libero_file(path, instruction=None)
    with pytest.raises(DataError, match="no language instruction.*pass task="):
        HDF5Dataset(path).episode(0)
    ds = HDF5Dataset(
        path, task="Lift the cube", cameras=["agentview_rgb"], state_keys=["obs/ee_pos", "obs/gripper_states"],
        flip_images=True,
    )  # fmt: skip
    episode = ds.episode(1)
    assert episode.task == "Lift the cube" and list(episode.cameras) == ["agentview_rgb"]
    expected_state = np.concatenate([written[1]["obs/ee_pos"], written[1]["obs/gripper_states"]], axis=1)
    np.testing.assert_array_equal(episode.state, expected_state.astype(np.float32))
    turned = written[1]["obs/agentview_rgb"][:, ::-1, ::-1]  # [T, H, W, 3] rotated by 180 degrees
    np.testing.assert_array_equal(episode.frames("agentview_rgb")[0], turned[0])
    np.testing.assert_array_equal(episode.frames("agentview_rgb").read(), turned)


def test_bad_files_are_reported_with_file_and_demo(tmp_path):
    path = tmp_path / "bad.hdf5"
    write_libero_file(path)
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/agentview_rgb"]
        f["data/demo_1/obs/agentview_rgb"] = smooth_frames(LENGTHS[1] - 1, 32, 0)
        del f["data/demo_2/states"]
    ds = HDF5Dataset(path)
    ds.episode(0)
    with pytest.raises(DataError, match=r"episode 1 \(bad.hdf5:data/demo_1\).*3 frames but 4 actions.*mismatched"):
        ds.episode(1)
    with pytest.raises(DataError, match=r"episode 2 \(bad.hdf5:data/demo_2\): missing dataset 'states'"):
        ds.episode(2)
    (tmp_path / "corrupt.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(DataError, match="corrupt.hdf5 cannot be opened"):
        HDF5Dataset(tmp_path / "corrupt.hdf5")
    with pytest.raises(DataError, match="does not exist"):
        HDF5Dataset(tmp_path / "missing.hdf5")


def test_hdf5_converts_to_lerobot(tmp_path):
    written = write_libero_file(tmp_path / "demos.hdf5")
    source = HDF5Dataset(tmp_path / "demos.hdf5", flip_images=True)
    convert_to_lerobot(source, tmp_path / "out", progress=False)
    back = LeRobotDataset(tmp_path / "out")
    assert back.num_episodes == 3 and back.fps == 20.0
    assert back.camera_names == ["agentview_rgb", "eye_in_hand_rgb"]
    for index, arrays in enumerate(written):
        episode = back.episode(index)
        np.testing.assert_array_equal(episode.actions, arrays["actions"].astype(np.float32))  # exact
        np.testing.assert_array_equal(episode.state, arrays["states"].astype(np.float32))
        decoded = episode.frames("agentview_rgb").read().astype(np.int16)
        error = np.abs(decoded - arrays["obs/agentview_rgb"][:, ::-1, ::-1])
        assert error.mean() < 2.5 and error.max() <= 40
        assert episode.task == "put the bowl on the plate"
        assert episode.metadata == {"source": "demos", "source_index": index, "num_samples": LENGTHS[index]}


def test_interrupted_conversion_resumes(tmp_path):
    write_libero_file(tmp_path / "demos.hdf5")
    source = HDF5Dataset(tmp_path / "demos.hdf5")
    # a conversion that stopped after two episodes, then resumed
    partial = tmp_path / "partial"
    writer = LeRobotWriter(partial, 20, lerobot_features(source.episode(0), source.camera_names, None))
    for index in range(2):
        episode = source.episode(index)
        frames = {f"observation.images.{c}": episode.frames(c).read() for c in source.camera_names}
        writer.add_episode({**frames, "observation.state": episode.state, "action": episode.actions}, episode.task)
    out = convert_to_lerobot(source, partial, resume=True, progress=False)
    assert out.episode_lengths() == list(LENGTHS)
    np.testing.assert_array_equal(out.episode(2).actions, source.episode(2).actions)
