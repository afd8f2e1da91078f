"""The `vlaforge` command: info, predict, demo, help and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlaforge.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_on_the_7b_preset_reports_the_original_counts(capsys):
    code, out, _ = run(capsys, "info", "openvla-7b", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["total_parameters"] == 7_541_237_184 and info["state_dict_tensors"] == 982
    assert info["parameters"]["projector"] == 71_385_600
    assert info["config"]["text_config"]["vocab_size"] == 32064


def test_info_on_a_checkpoint_lists_norm_stat_keys(capsys, tiny_checkpoint, tiny_model):
    code, out, _ = run(capsys, "info", str(tiny_checkpoint))
    assert code == 0
    assert "norm-stat keys (1): synthetic" in out
    assert f"{sum(p.numel() for p in tiny_model.parameters()):,}" in out


def test_predict_prints_the_action_of_predict_action(capsys, tiny_checkpoint, tiny_model, tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "frame.png")
    code, out, _ = run(capsys, "predict", str(tiny_checkpoint), str(tmp_path / "frame.png"), "open the drawer")
    assert code == 0
    expected = tiny_model.predict_action(image, "open the drawer")
    np.testing.assert_allclose(json.loads(out)["action"], expected, rtol=0, atol=0)


def test_predict_quant_int8_prints_the_int8_models_action_and_the_mode(capsys, tiny_checkpoint, tmp_path):
    from vlaforge.infer.quantize import load_quantized

    image = np.random.default_rng(2).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "frame.png")
    argv = ["predict", str(tiny_checkpoint), str(tmp_path / "frame.png"), "open the drawer", "--quant", "int8"]
    code, out, _ = run(capsys, *argv)
    answer = json.loads(out)
    assert code == 0 and answer["quant"] == "int8"
    expected = load_quantized(tiny_checkpoint, "int8").predict_action(image, "open the drawer")  # deterministic
    np.testing.assert_array_equal(answer["action"], expected)
    with pytest.raises(SystemExit) as info:  # tyro refuses a mode that is not in the list, naming the choices
        main(argv[:-1] + ["int4"])
    assert info.value.code == 2 and "nf4" in capsys.readouterr().err


def test_user_errors_print_one_line_and_exit_2(capsys, tiny_checkpoint, tmp_path):
    code, _, err = run(capsys, "predict", str(tiny_checkpoint), str(tmp_path / "missing.png"), "go")
    assert code == 2 and "image file" in err and "Traceback" not in err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code, _, err = run(capsys, "predict", str(tiny_checkpoint), str(tmp_path / "bad.png"), "go")
    assert code == 2 and "is not a readable image" in err
    code, _, err = run(capsys, "info", "openvla-7c")
    assert code == 2 and "Did you mean 'openvla-7b'" in err


def test_unknown_command_suggests_the_closest(capsys):
    code, _, err = run(capsys, "infoo")
    assert code == 2 and "Did you mean 'info'" in err


@pytest.mark.slow
@pytest.mark.sim
def test_quick_demo_runs_every_stage_and_reports(capsys, tmp_path):
    code, out, _ = run(capsys, "demo", "--quick", "--out", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    assert code == 0
    assert set(report["results"]["tasks"]) == {"button-press-topdown-v3", "drawer-close-v3", "window-open-v3"}
    assert (tmp_path / "training_curve.png").stat().st_size > 0
    assert (tmp_path / "run" / "metrics.jsonl").is_file() and (tmp_path / "report.md").is_file()
    # rerunning resumes: every stage is already done, so nothing is recorded or trained again
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    episodes = sorted(p.name for p in (tmp_path / "data" / "meta" / "episodes").rglob("*.parquet"))
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    code, _, _ = run(capsys, "demo", "--quick", "--out", str(tmp_path))
    assert code == 0
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics  # no training step logged again
    assert sorted(p.name for p in (tmp_path / "data" / "meta" / "episodes").rglob("*.parquet")) == episodes
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == checkpoints
    again = json.loads((tmp_path / "report.json").read_text())["results"]
    assert again["tasks"] == report["results"]["tasks"]  # the re-evaluation is deterministic


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "vlaforge"  # installed by pip from [project.scripts]
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "predict" in result.stdout


def test_study_command_rejects_an_unknown_comparison_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:  # tyro reports the config's ValueError and exits with 2
        main(["study", "--out", str(tmp_path / "s"), "--comparisons", "fusoin"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unknown comparison(s) ['fusoin']" in err and "fusion, vision" in err
    assert not (tmp_path / "s").exists()  # nothing recorded or trained


@pytest.mark.parametrize(("command", "noun", "names"), [("bench", "benchmark", "sim, data, infer, train, serve"),
                                                        ("sim", "subcommand", "demos, suites")])  # fmt: skip
def test_commands_with_subcommands_list_them_and_reject_unknown_ones(capsys, command, noun, names):
    code, out, _ = run(capsys, command)
    assert code == 0 and f"{noun}s: {names}" in out
    code, _, err = run(capsys, command, "nope")
    assert code == 2 and f"vlaforge {command}: unknown {noun} 'nope'; choose one of: {names}" in err
