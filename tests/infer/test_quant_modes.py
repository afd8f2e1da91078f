"""The quantization modes' names and checks: valid modes, a missing bitsandbytes, and no torch import.

Run: .venv/bin/pytest tests/infer/test_quant_modes.py -q
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlaforge.infer import quantize
from vlaforge.infer.quant_modes import QUANT_MODES, QuantizationError, check_backend, check_mode

SRC = Path(__file__).resolve().parents[2] / "src"


def test_modes_match_the_implemented_quantizers():
    assert set(QUANT_MODES) == set(quantize.QUANTIZERS)
    assert quantize.QuantizationError is QuantizationError and quantize.check_mode is check_mode  # re-exported
    assert [check_mode(mode) for mode in QUANT_MODES] == list(QUANT_MODES)
    with pytest.raises(QuantizationError, match="unknown quantization mode 'INT8'; valid modes: fp32, bf16, int8"):
        check_mode("INT8")
    assert issubclass(QuantizationError, ValueError)  # the CLI prints ValueErrors as one line, exit 2


def test_bitsandbytes_modes_name_the_install_command_when_it_is_missing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what find_spec and `import` see when it is absent
    for mode in ("bnb-int8", "nf4"):
        with pytest.raises(QuantizationError, match=r"needs bitsandbytes.*pip install 'vlaforge\[quant\]'"):
            check_backend(mode)
        with pytest.raises(QuantizationError, match="needs bitsandbytes"):
            quantize.load_for_inference(tmp_path / "no-such-checkpoint", mode)  # before touching the disk
    assert check_backend("int8") == "int8"  # torch's own kernels: no extra package


def test_configs_that_take_a_mode_do_not_import_torch():
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from vlaforge.serve.config import ServeConfig
        from vlaforge.sim.evaluate import EvalConfig
        EvalConfig(quant="int8"), ServeConfig(quant="nf4")
        print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
