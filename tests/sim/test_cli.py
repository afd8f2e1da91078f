"""`vlaforge eval`, `vlaforge sim` and `vlaforge bench sim` from the command line."""

from __future__ import annotations

import json

import pytest

from vlaforge.cli.main import main

pytestmark = pytest.mark.sim


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_prints_the_table_and_writes_results(capsys, tmp_path):
    out_dir = tmp_path / "eval"
    code, out, _ = run(capsys, "eval", "--policy", "random", "--suite", "mt10", "--tasks", "reach-v3",
                       "--episodes-per-task", "2", "--max-steps", "3", "--image-size", "32", "--num-workers", "0",
                       "--no-progress", "--out", str(out_dir))  # fmt: skip
    assert code == 0
    assert "reach-v3" in out and "0/2" in out and "results.json" in out
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["policy"] == "random" and saved["config"]["image_size"] == 32 and saved["config"]["max_steps"] == 3
    assert saved["tasks"]["reach-v3"]["mean_length"] == 3
    assert (out_dir / "videos" / saved["videos"]["reach-v3"]["failure"]).is_file()


def test_eval_bad_task_or_policy_exits_2_with_guidance(capsys, tmp_path):
    code, _, err = run(capsys, "eval", "--policy", "expert", "--suite", "mt10", "--tasks", "reach-v4",
                       "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "unknown metaworld task 'reach-v4'" in err and "Did you mean reach-v3" in err
    assert "Valid tasks:" in err and "window-close-v3" in err
    code, _, err = run(capsys, "eval", "--policy", "my-model", "--suite", "demo", "--out", str(tmp_path / "y"))
    assert code == 2 and "a checkpoint directory" in err and "ws://" in err
    code, _, err = run(capsys, "eval", "--policy", "expert", "--suite", "mt100")
    assert code == 2 and "Did you mean 'mt10'" in err


def test_eval_quant_int8_evaluates_the_int8_checkpoint_and_records_the_mode(capsys, tmp_path):
    from tests.conftest import make_tiny_model
    from tests.sim.test_evaluate import METAWORLD_4D_STATS

    make_tiny_model(norm_stats=METAWORLD_4D_STATS).save_pretrained(tmp_path / "ckpt")
    out_dir = tmp_path / "eval"
    code, out, _ = run(capsys, "eval", "--policy", str(tmp_path / "ckpt"), "--suite", "demo", "--tasks",
                       "drawer-close-v3", "--episodes-per-task", "1", "--max-steps", "2", "--image-size", "32",
                       "--num-workers", "0", "--no-progress", "--no-videos", "--quant", "int8",
                       "--out", str(out_dir))  # fmt: skip
    assert code == 0 and "drawer-close-v3" in out
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["policy"] == "ckpt" and saved["quant"] == "int8" and saved["config"]["quant"] == "int8"
    failures = saved["tasks"]["drawer-close-v3"]["failures"]
    assert saved["complete"] and failures[0]["reason"] == "no success within 2 steps"  # actions of the right shape
    code, _, err = run(capsys, "eval", "--policy", "random", "--suite", "demo", "--quant", "int8",
                       "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "checkpoint policies only" in err


def test_sim_suites_and_subcommand_errors(capsys):
    code, out, _ = run(capsys, "sim", "suites")
    assert code == 0 and "mt10" in out and "ml45-test" in out and "bin-picking-v3" in out
    code, _, err = run(capsys, "sim", "demo")
    assert code == 2 and "demos" in err


def test_sim_demos_writes_a_dataset(capsys, tmp_path):
    argv = ["sim", "demos", "--tasks", "reach-v3", "--episodes-per-task", "1", "--image-size", "32"]
    code, out, _ = run(capsys, *argv, "--num-workers", "0", "--no-progress", "--out", str(tmp_path / "d"))
    assert code == 0 and "kept 1 successful episodes, dropped 0" in out
    assert (tmp_path / "d" / "meta" / "info.json").is_file()


def test_bench_sim_prints_a_table(capsys):
    argv = ["bench", "sim", "--steps", "5", "--repeats", "1", "--default-render-steps", "0", "--workers", "0"]
    code, out, _ = run(capsys, *argv, "--envs", "1", "--episodes", "1", "--image-size", "32", "--task", "reach-v3")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and "steps/s" not in line]
    assert len(rows) == 4 and all(float(r.split("|")[2]) > 0 and float(r.split("|")[3]) > 0 for r in rows)
