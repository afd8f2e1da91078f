"""`vlaforge data {inspect,convert,stats}` and a small `vlaforge bench data` run (the command works; no speed claim)."""

import json

import h5py
import numpy as np

from tests.data.test_hdf5 import write_libero_file
from vlaforge.cli.main import main
from vlaforge.data.lerobot import LeRobotDataset


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_prints_counts_ranges_idle_and_draws_a_sheet(capsys, lerobot_dataset, tmp_path):
    root, written = lerobot_dataset
    sheet = tmp_path / "sheet.png"
    code, out, _ = run(capsys, "data", "inspect", str(root), "--sheet", str(sheet))
    assert code == 0
    assert "episodes      3" in out and "frames        18" in out and "fps           10" in out
    assert "cameras       corner 32x32" in out and "idle steps    0.0%" in out
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sheet.stat().st_size > 5000
    code, out, _ = run(capsys, "data", "inspect", str(root), "--json", "--sheet", "None")
    report = json.loads(out)
    actions = np.concatenate([w["action"] for w in written])
    np.testing.assert_allclose(report["stats"]["action"]["max"], actions.max(axis=0), atol=1e-6)
    assert report["contact_sheet"] is None and report["num_tasks"] == 2


def test_inspect_counts_idle_steps(capsys, tmp_path):
    write_libero_file(tmp_path / "idle.hdf5", lengths=(10,))
    with h5py.File(tmp_path / "idle.hdf5", "a") as f:
        actions = f["data/demo_0/actions"][...]
        actions[2:6, :6] = 0.0  # four still steps with the gripper held
        actions[2:6, 6] = actions[1, 6]
        f["data/demo_0/actions"][...] = actions
    code, out, _ = run(capsys, "data", "inspect", str(tmp_path / "idle.hdf5"), "--json", "--sheet", "None")
    assert code == 0 and json.loads(out)["idle_fraction"] == 0.4


def test_convert_hdf5_to_lerobot_and_compute_statistics(capsys, tmp_path):
    written = write_libero_file(tmp_path / "demos.hdf5")
    out_dir = tmp_path / "lerobot"
    code, out, _ = run(capsys, "data", "convert", str(tmp_path / "demos.hdf5"), str(out_dir), "--flip-images")
    assert code == 0 and "wrote 3 episodes" in out
    ds = LeRobotDataset(out_dir)
    np.testing.assert_array_equal(ds.episode(2).actions, written[2]["actions"].astype(np.float32))
    code, out, _ = run(capsys, "data", "stats", str(out_dir), "--out", str(tmp_path / "run"))
    statistics = json.loads((tmp_path / "run" / "dataset_statistics.json").read_text())
    assert code == 0 and list(statistics) == ["lerobot"]
    assert statistics["lerobot"]["action"]["mask"] == [True] * 6 + [False]
    run(capsys, "data", "stats", str(tmp_path / "demos.hdf5"), "--out", str(tmp_path / "run"), "--name", "raw")
    assert sorted(json.loads((tmp_path / "run" / "dataset_statistics.json").read_text())) == ["lerobot", "raw"]


def test_user_errors_are_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "data", "inspect", str(tmp_path / "nothing"))
    assert code == 2 and "does not exist" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "data", "convert", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert code == 2 and "cannot tell the format" in err
    code, _, err = run(capsys, "data", "frobnicate")
    assert code == 2 and "unknown subcommand" in err


def test_bench_data_runs_and_prints_the_rows(capsys):
    argv = ["--size", "32", "--episodes", "2", "--length", "8", "--samples", "16", "--workers", "0"]
    code, out, _ = run(capsys, "bench", "data", *argv, "--batch-size", "4", "--train-steps", "1", "--json")
    rows = {row["config"].split(",")[0]: row for row in json.loads(out)["rows"]}
    assert code == 0
    assert set(rows) == {"decode (PyAV", "decode + augment + tokenize", "random access (VLAFrameDataset", "DataLoader",
                         "tiny preset train step"}  # fmt: skip
    assert all(row["per_s"] > 0 for row in rows.values())
