import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.data.synthetic import CAMERA, episode_arrays, features, write_dataset
from vlaforge.data import lerobot
from vlaforge.data.episode import DataError
from vlaforge.data.lerobot import LeRobotDataset, LeRobotWriter
from vlaforge.data.video import VideoError


def frames_close(decoded: np.ndarray, original: np.ndarray) -> None:
    """AV1 at crf 30 on smooth images: small mean error, bounded worst pixel."""
    assert decoded.shape == original.shape
    error = np.abs(decoded.astype(np.int16) - original.astype(np.int16))
    assert error.mean() < 2.5, error.mean()
    assert error.max() <= 40, error.max()


def test_round_trip_actions_exact_frames_within_codec_tolerance(lerobot_dataset):
    root, written = lerobot_dataset
    ds = LeRobotDataset(root)
    assert (ds.num_episodes, ds.num_frames, ds.fps) == (3, 18, 10.0)
    assert ds.camera_names == ["corner"]
    assert ds.episode_lengths() == [5, 7, 6]
    for index, arrays in enumerate(written):
        episode = ds.episode(index)
        assert episode.task == ("pick the cube", "open the drawer")[index % 2]
        assert episode.metadata == {"seed": index}
        np.testing.assert_array_equal(episode.actions, arrays["action"])
        np.testing.assert_array_equal(episode.state, arrays["observation.state"])
        frames_close(episode.frames("corner").read(), arrays[CAMERA])
        # random access by seeking gives the same pixels as the sequential read
        np.testing.assert_array_equal(episode.frames(CAMERA)[3], episode.frames("corner").read()[3])
        np.testing.assert_array_equal(episode.frames("corner")[-1], episode.frames("corner").read(0, None)[-1])


def test_finalize_packs_episodes_into_the_published_layout(lerobot_dataset):
    root, written = lerobot_dataset
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        f"videos/{CAMERA}/chunk-000/file-000.mp4",
    ]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 18, 2)
    assert info["features"][CAMERA]["info"]["video.codec"] == "av1"
    assert set(info["features"]) >= {"timestamp", "frame_index", "episode_index", "index", "task_index"}
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert episodes["dataset_from_index"] == [0, 5, 12] and episodes["dataset_to_index"] == [5, 12, 18]
    assert episodes[f"videos/{CAMERA}/from_timestamp"] == pytest.approx([0.0, 0.5, 1.2])
    assert episodes[f"videos/{CAMERA}/to_timestamp"] == pytest.approx([0.5, 1.2, 1.8])
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data["index"].to_pylist() == list(range(18))
    assert data["frame_index"].to_pylist()[:6] == [0, 1, 2, 3, 4, 0]
    assert data["timestamp"].to_pylist()[1] == pytest.approx(0.1)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert dict(zip(tasks["task"].to_pylist(), tasks["task_index"].to_pylist())) == {
        "pick the cube": 0,
        "open the drawer": 1,
    }


def test_stats_json_matches_numpy(lerobot_dataset):
    root, written = lerobot_dataset
    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.concatenate([w["action"] for w in written]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(actions, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], actions.std(axis=0), rtol=1e-6)
    assert stats["action"]["count"] == [18]
    assert np.asarray(stats[CAMERA]["mean"]).shape == (3, 1, 1)
    pixels = np.concatenate([w[CAMERA] for w in written]).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(np.asarray(stats[CAMERA]["min"]).ravel(), pixels.min(axis=0), atol=1e-6)


def test_resume_continues_after_the_last_committed_episode(tmp_path):
    root = tmp_path / "ds"
    written = write_dataset(root, lengths=(4, 5), finalize=False)
    # simulate a crash inside add_episode: the episode's data file exists but was never committed
    (root / "data/chunk-000/file-002.parquet").write_bytes(b"half-written")
    writer = LeRobotWriter(root, fps=10, features=features(), resume=True)
    assert writer.num_episodes == 2 and writer.episode_metadata(1) == {"seed": 1}
    assert not (root / "data/chunk-000/file-002.parquet").exists()
    arrays = episode_arrays(3, seed=7)
    assert writer.add_episode(arrays, task="pick the cube", metadata={"seed": 7}) == 2
    writer.finalize(progress=False)
    ds = LeRobotDataset(root)
    assert ds.episode_lengths() == [4, 5, 3]
    np.testing.assert_array_equal(ds.episode(0).actions, written[0]["action"])
    np.testing.assert_array_equal(ds.episode(2).actions, arrays["action"])
    # resuming a finalized dataset appends after the packed files and packs again
    writer = LeRobotWriter(root, fps=10, features=features(), resume=True)
    writer.add_episode(episode_arrays(2, seed=8), task="open the drawer")
    writer.finalize(progress=False)
    ds = LeRobotDataset(root)
    assert ds.episode_lengths() == [4, 5, 3, 2]
    frames_close(ds.episode(3).frames("corner").read(), episode_arrays(2, seed=8)[CAMERA])
    frames_close(ds.episode(1).frames("corner").read(), written[1][CAMERA])


def test_small_file_limits_give_several_files_and_chunks(tmp_path):
    root = tmp_path / "ds"
    written = write_dataset(root, lengths=(3, 4, 5), chunks_size=2, data_files_size_in_mb=0, video_files_size_in_mb=0)
    assert (root / "data/chunk-001/file-000.parquet").is_file()
    assert (root / f"videos/{CAMERA}/chunk-001/file-000.mp4").is_file()
    ds = LeRobotDataset(root)
    for index, arrays in enumerate(written):
        np.testing.assert_array_equal(ds.episode(index).actions, arrays["action"])
        frames_close(ds.episode(index).frames("corner").read(), arrays[CAMERA])


def test_image_features_round_trip_exactly(tmp_path):
    root = tmp_path / "ds"
    written = write_dataset(root, lengths=(3, 2), feature_kw={"camera_dtype": "image"})
    ds = LeRobotDataset(root)
    assert not list(root.glob("videos/**/*.mp4"))
    np.testing.assert_array_equal(ds.episode(1).frames("corner").read(), written[1][CAMERA])


def test_writer_refuses_an_existing_dataset_and_a_changed_spec(lerobot_dataset):
    root, _ = lerobot_dataset
    with pytest.raises(DataError, match="resume=True"):
        LeRobotWriter(root, fps=10, features=features())
    with pytest.raises(DataError, match="fps"):
        LeRobotWriter(root, fps=20, features=features(), resume=True)
    with pytest.raises(DataError, match="features"):
        LeRobotWriter(root, fps=10, features=features(action_dim=7), resume=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(action=a["action"][:-1]), "different lengths"),
        (lambda a: a["action"].__setitem__((2, 1), np.nan), "feature 'action': NaN or inf"),
        (lambda a: a.pop("observation.state"), r"missing features \['observation.state'\]"),
        (lambda a: a.update(action=a["action"][:, :3]), "feature 'action'.*the spec says"),
        (lambda a: a.update({CAMERA: a[CAMERA][:, :, :31]}), "frame size 31x32 is odd"),
    ],
)
def test_add_episode_rejects_bad_input_naming_the_episode(tmp_path, change, message):
    writer = LeRobotWriter(tmp_path / "ds", fps=10, features=features())
    arrays = episode_arrays(5, seed=0)
    change(arrays)
    with pytest.raises(DataError, match=message) as err:
        writer.add_episode(arrays, task="pick")
    assert "episode 0" in str(err.value)
    assert writer.num_episodes == 0


def test_truncated_video_names_file_and_episode(lerobot_dataset):
    root, _ = lerobot_dataset
    video = root / f"videos/{CAMERA}/chunk-000/file-000.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    ds = LeRobotDataset(root)
    episode = ds.episode(2)  # lazy: nothing is decoded yet
    with pytest.raises(VideoError, match=r"episode 2.*file-000\.mp4"):
        episode.frames("corner").read()
    with pytest.raises(VideoError, match=r"episode 0.*file-000\.mp4"):
        ds.validate()


def test_corrupt_parquet_names_file_and_episode(lerobot_dataset):
    root, _ = lerobot_dataset
    data = root / "data/chunk-000/file-000.parquet"
    data.write_bytes(b"PAR1" + b"\x00" * 64)
    with pytest.raises(DataError, match=r"episode 1.*data/chunk-000/file-000\.parquet.*corrupt"):
        LeRobotDataset(root).episode(1)


def test_episode_length_mismatch_is_reported(lerobot_dataset):
    root, _ = lerobot_dataset
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    lengths = table["length"].to_pylist()
    lengths[1] += 2
    pq.write_table(table.set_column(table.column_names.index("length"), "length", pa.array(lengths)), path)
    ds = LeRobotDataset(root)
    np.testing.assert_array_equal(ds.episode(0).actions.shape, (5, 4))
    with pytest.raises(DataError, match="episode 1.*9 steps.*holds 7 rows.*mismatched episode length"):
        ds.episode(1)


def test_missing_keys_are_reported(lerobot_dataset):
    root, _ = lerobot_dataset
    with pytest.raises(DataError, match="no feature 'actions'"):
        LeRobotDataset(root, action_key="actions")
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.velocity"] = {"dtype": "float32", "shape": [2], "names": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="episode 0: feature 'observation.velocity' is missing"):
        LeRobotDataset(root).episode(0)
    (root / "meta/tasks.parquet").unlink()
    with pytest.raises(DataError, match="tasks.parquet does not exist"):
        LeRobotDataset(root)


def test_v21_datasets_get_a_conversion_hint(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1", "fps": 10}))
    with pytest.raises(DataError, match="v2.1.*convert_dataset_v21_to_v30"):
        LeRobotDataset(tmp_path)


def test_a_finalize_interrupted_during_the_swap_completes_on_resume(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    written = write_dataset(root, lengths=(3, 4), finalize=False)
    writer = LeRobotWriter(root, fps=10, features=features(), resume=True)
    monkeypatch.setattr(lerobot, "_finish_pack", lambda root: None)  # pack into the scratch dir, swap nothing
    writer._pack(progress=False)
    monkeypatch.undo()
    # the process dies after swapping the data directory only
    (root / ".vlaforge-old").mkdir()
    shutil.move(root / "data", root / ".vlaforge-old" / "data")
    shutil.move(root / ".vlaforge-pack" / "data", root / "data")
    writer = LeRobotWriter(root, fps=10, features=features(), resume=True)
    assert not (root / ".vlaforge-pack").exists() and not (root / ".vlaforge-old").exists()
    writer.finalize(progress=False)
    ds = LeRobotDataset(root)
    for index, arrays in enumerate(written):
        np.testing.assert_array_equal(ds.episode(index).actions, arrays["action"])
        frames_close(ds.episode(index).frames("corner").read(), arrays[CAMERA])
