"""The names of the quantization modes and their checks, without importing torch.

`vlaforge.infer.quantize` implements the modes. This module only names them, so that the configurations
and flags that take a mode (`EvalConfig.quant`, `ServeConfig.quant`, `vlaforge predict --quant`) can reject
a bad one before torch and the model are loaded: the simulation harness and the server's settings stay
free of the torch import.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, get_args

QuantMode = Literal["fp32", "bf16", "int8", "bnb-int8", "nf4"]
QUANT_MODES: tuple[str, ...] = get_args(QuantMode)
BITSANDBYTES_MODES: tuple[str, ...] = ("bnb-int8", "nf4")  # need bitsandbytes (the `quant` extra)


class QuantizationError(ValueError):
    """A quantization mode is unknown or cannot be applied to this model; the message says what to do."""


def check_mode(mode: str) -> QuantMode:
    """Returns `mode` if it is a known quantization mode, else raises QuantizationError listing them."""
    if mode not in QUANT_MODES:
        raise QuantizationError(f"unknown quantization mode {mode!r}; valid modes: {', '.join(QUANT_MODES)}")
    return mode  # type: ignore[return-value]


def check_backend(mode: str) -> QuantMode:
    """`check_mode`, and for the bitsandbytes modes: bitsandbytes is installed (checked without importing it).

    Raises:
        QuantizationError: unknown mode, or bitsandbytes missing (the message names the install command).
    """
    check_mode(mode)
    if mode in BITSANDBYTES_MODES and importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationError(
            f"quantization mode {mode!r} needs bitsandbytes, which is not installed: pip install 'vlaforge[quant]' "
            "(or use mode 'int8', which needs nothing beyond torch)"
        )
    return mode  # type: ignore[return-value]
