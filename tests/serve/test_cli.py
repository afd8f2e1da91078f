"""`vlaforge serve` and `vlaforge bench serve` from the command line.

Run: .venv/bin/pytest tests/serve/test_cli.py -q (the benchmark run is marked slow)
"""

from __future__ import annotations

import json

import pytest

from vlaforge.cli.main import main


def test_serve_help_lists_the_settings(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--host", "--max-batch-size", "--max-wait-ms", "--token", "--max-request-bytes", "--safety.scale"):
        assert flag in text
    assert "--quant {fp32,bf16,int8,bnb-int8,nf4}" in text
    assert "127.0.0.1" in text


def test_serve_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_serve_refuses_bad_settings(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # tyro refuses a quantization mode that is not in the list
        main(["serve", str(tmp_path), "--quant", "int4"])
    assert info.value.code == 2 and "nf4" in capsys.readouterr().err


def test_serve_quant_int8_loads_an_int8_model(tiny_checkpoint, capsys, monkeypatch):
    from vlaforge.infer.quantize import Int8Linear, decoder_of

    served = {}
    monkeypatch.setattr("vlaforge.serve.server.run", lambda app, config, **_: served.update(app=app, config=config))
    assert main(["serve", str(tiny_checkpoint), "--quant", "int8"]) == 0  # `run` replaced: returns at once
    assert "(int8)" in capsys.readouterr().out
    policy = served["app"].state.service.policy
    assert served["config"].quant == policy.quant == "int8"
    assert any(isinstance(m, Int8Linear) for m in decoder_of(policy.model).modules())


@pytest.mark.slow  # starts two servers (one per mode): ~30 s
def test_bench_serve_reports_figures(tiny_checkpoint, capsys):
    args = ["bench", "serve", "--checkpoint", str(tiny_checkpoint), "--clients", "3", "--requests", "4"]
    assert main([*args, "--protocol", "ws", "--json", "--no-ceiling"]) == 0
    report = json.loads(capsys.readouterr().out)
    by_mode = {r["mode"]: r for r in report["results"]}
    assert set(by_mode) == {"batched", "unbatched"}
    for result in by_mode.values():
        assert result["errors"] == 0 and result["requests"] == 3 * 4
        assert result["throughput_rps"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
        assert result["exit_code"] in (0, -15)
    assert by_mode["unbatched"]["mean_batch_size"] == 1.0
    assert report["median_throughput_ratio"] is not None
