"""Quantized inference: one function per mode, all applied to the LLM's decoder Linear layers.

```
 mode       decoder Linear layers (q/k/v/o, gate/up/down)            everything else
 fp32       float32                                                   float32
 bf16       bfloat16                                                  bfloat16
 int8       Int8Linear: int8 weights x int8 activations -> int32      unchanged (the model's dtype)
 bnb-int8   bitsandbytes Linear8bitLt (LLM.int8(), outliers > 6.0)    unchanged
 nf4        bitsandbytes Linear4bit, 4-bit NormalFloat, blocks of 64  unchanged
```

`int8` is the CPU-speed path. It is W8A8 *dynamic* quantization written out in one small module: weights
are quantized once, per output channel; activations are quantized on the fly, per token; the product runs
on PyTorch's own int8 GEMM (`torch._int_mm`, oneDNN with AVX512-VNNI on this CPU) and is rescaled to float.
docs/quantization.md has the backend comparison (torch.ao, torchao, quanto, bitsandbytes) that chose it.

`bnb-int8` and `nf4` are the original's 8/4-bit modes (`BitsAndBytesConfig(load_in_8bit / load_in_4bit)`),
meant for GPU users; they also run on the CPU, smaller but not faster. Vision towers, projector, embeddings
and `lm_head` are never quantized: decoding reads one row of logits per step, so `lm_head` costs little,
and the towers are a small share of the 7B model's weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import nn

# The mode names live in a torch-free module (configs validate them without torch); re-exported here.
from vlaforge.infer.quant_modes import QUANT_MODES as QUANT_MODES
from vlaforge.infer.quant_modes import QuantizationError as QuantizationError
from vlaforge.infer.quant_modes import QuantMode as QuantMode
from vlaforge.infer.quant_modes import check_backend as check_backend
from vlaforge.infer.quant_modes import check_mode as check_mode

if TYPE_CHECKING:
    from vlaforge.actions.tokenizer import ActionTokenizer
    from vlaforge.model.vla import OpenVLA

INT8_MAX = 127  # symmetric int8 range [-127, 127]; -128 is left out so that the grid is symmetric
MIN_SCALE = 1e-12  # floor of a quantization scale: keeps all-zero rows from dividing by zero
LLM_INT8_THRESHOLD = 6.0  # bitsandbytes' LLM.int8() outlier threshold (the transformers default)
NF4_OUT_MULTIPLE = 32  # bitsandbytes' CPU 4-bit kernel repacks weights in blocks of 32 output features


# ------------------------------------------------------------------------------------------- int8
class Int8Linear(nn.Module):
    """`y = x @ W.T + b` with int8 weights and int8 activations (dynamic, symmetric W8A8).

    Weights: one scale per output channel, `W ~ qweight * weight_scale[:, None]`, fixed at quantization.
    Activations: one scale per token (row of `x`), computed on every call from the row's max |value|.
    The int8 x int8 product accumulates exactly in int32; one multiply by both scales restores float.
    """

    def __init__(self, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.register_buffer("qweight", qweight)  # [N, K] int8
        self.register_buffer("weight_scale", weight_scale)  # [N] float32
        self.register_buffer("bias", bias)  # [N] float32 or None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """Quantizes a float `nn.Linear` (any float dtype) per output channel."""
        weight = linear.weight.detach().to(torch.float32, copy=True)  # [N, K]: the in-place ops below reuse it
        scale = weight.abs().amax(dim=1).clamp(min=MIN_SCALE) / INT8_MAX  # [N]
        qweight = weight.div_(scale[:, None]).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)  # [N, K]
        bias = None if linear.bias is None else linear.bias.detach().float()
        return cls(qweight, scale, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., K] -> [..., N]` in the dtype of `x`."""
        return int8_linear(x, self.qweight, self.weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class QuantizedRows(NamedTuple):
    """Float rows quantized for `int8_product`: int8 codes and one scale per row (`codes * scale ~ rows`).

    Several projections of one input (q, k, v; gate, up) can share it: the decoding loop quantizes once.
    """

    codes: torch.Tensor  # [M, K] int8
    scale: torch.Tensor  # [M, 1] float32
    dtype: torch.dtype  # dtype of the float rows (the products come back in it)


def quantize_rows(x: torch.Tensor) -> QuantizedRows:
    """Symmetric int8 codes of each row of `x` `[M, K]`, scaled by the row's max |value|."""
    rows = x.float()  # [M, K] (may alias x: only new tensors change in place)
    # abs + amax: two vectorized passes; torch.linalg.vector_norm(ord=inf) gives the same values but runs a
    # scalar reduction, 16-19x slower on a prefill's rows ([300, 512]: 433 vs 27 µs here)
    row_scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=MIN_SCALE).div_(INT8_MAX)  # [M, 1]
    # |rows / row_scale| <= 127 (1 + 2^-23) < 127.5, so rounding lands in [-127, 127]: no clamp needed
    codes = torch.div(rows, row_scale).round_().to(torch.int8)  # [M, K]
    return QuantizedRows(codes, row_scale, x.dtype)


def int8_product(
    rows: QuantizedRows, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`rows @ W.T + b` from int8 codes: `[M, K] -> [M, N]` in the rows' float dtype.

    Args:
        rows: the quantized activations (`quantize_rows`).
        qweight: `[N, K]` int8 weights.
        weight_scale: `[N]` float32 scale per output channel.
        bias: `[N]` float32, or None.
    """
    # qweight.t() is a strided view: oneDNN reads the [N, K] layout directly, which is its fastest case.
    accumulated = torch._int_mm(rows.codes, qweight.t())  # [M, N] int32, exact
    out = accumulated.float().mul_(rows.scale).mul_(weight_scale)  # [M, N] back to real units
    if bias is not None:
        out.add_(bias)
    return out.to(rows.dtype)  # [M, N]


def int8_linear(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`Int8Linear`'s arithmetic: `[..., K] -> [..., N]` in the dtype of `x` (the decoding loop calls it directly).

    Args:
        x: `[..., K]` float activations.
        qweight: `[N, K]` int8 weights.
        weight_scale: `[N]` float32 scale per output channel.
        bias: `[N]` float32, or None.
    """
    rows = quantize_rows(x.reshape(-1, qweight.shape[1]))  # [M, K] codes and [M, 1] scales
    return int8_product(rows, qweight, weight_scale, bias).reshape(*x.shape[:-1], qweight.shape[0])  # [..., N]


# ------------------------------------------------------------------------------------------- helpers
def replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> int:
    """Replaces every `nn.Linear` inside `module` by `make(linear)`, in place. Returns how many.

    Each float layer is released as soon as its replacement exists, so peak memory grows by one layer only.
    """
    count = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            setattr(module, name, make(child))
            count += 1
        else:
            count += replace_linears(child, make)
    return count


def decoder_of(model: OpenVLA) -> nn.Module:
    """The LLM's decoder stack (`LlamaModel`): every Linear layer of the LLM except `lm_head`.

    It also holds the token embeddings and the norms, which are not Linear layers and stay as they are.
    """
    return model.language_model.get_decoder()


def _check_cpu_nf4_shapes(decoder: nn.Module) -> None:
    bad = sorted(
        {m.out_features for m in decoder.modules() if type(m) is nn.Linear and m.out_features % NF4_OUT_MULTIPLE}
    )
    if bad and next(decoder.parameters()).device.type == "cpu":
        raise QuantizationError(
            f"nf4 on the CPU needs every decoder Linear's out_features to be a multiple of {NF4_OUT_MULTIPLE} "
            f"(bitsandbytes' CPU kernel asserts it in eval mode); this model has {bad}. Use mode 'int8' on the "
            "CPU, or choose LLM widths (intermediate_size, heads x head_dim) that are multiples of 32."
        )


# ------------------------------------------------------------------------------------------- modes
def to_fp32(model: OpenVLA) -> OpenVLA:
    """Every weight in float32 (the reference for the agreement figures)."""
    return model.to(torch.float32)


def to_bf16(model: OpenVLA) -> OpenVLA:
    """Every weight in bfloat16 (AVX512-BF16 makes it fast on this CPU)."""
    return model.to(torch.bfloat16)


def to_int8(model: OpenVLA) -> OpenVLA:
    """Decoder Linear layers -> `Int8Linear` (W8A8 dynamic): the CPU-speed mode (see docs/quantization.md)."""
    replace_linears(decoder_of(model), Int8Linear.from_linear)
    return model


def to_bnb_int8(model: OpenVLA) -> OpenVLA:
    """Decoder Linear layers -> bitsandbytes `Linear8bitLt`, as `BitsAndBytesConfig(load_in_8bit=True)`."""
    import bitsandbytes as bnb

    def make(linear: nn.Linear) -> nn.Module:
        layer = bnb.nn.Linear8bitLt(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            has_fp16_weights=False, threshold=LLM_INT8_THRESHOLD, device="meta",
        )  # fmt: skip
        layer.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        return layer.to(linear.weight.device)  # bitsandbytes quantizes on this move

    replace_linears(decoder_of(model), make)
    return model


def to_nf4(model: OpenVLA) -> OpenVLA:
    """Decoder Linear layers -> bitsandbytes `Linear4bit` (NF4), as `load_in_4bit` with nf4 (QLoRA's type).

    The same layers QLoRA freezes in 4 bits, through the same function (`vlaforge.model.lora.quantize_4bit`).
    """
    from vlaforge.model.lora import quantize_4bit

    decoder = decoder_of(model)
    _check_cpu_nf4_shapes(decoder)
    compute_dtype = next(decoder.parameters()).dtype
    return quantize_4bit(model, quant_type="nf4", compute_dtype=compute_dtype)


QUANTIZERS: dict[str, Callable[[OpenVLA], OpenVLA]] = {
    "fp32": to_fp32, "bf16": to_bf16, "int8": to_int8, "bnb-int8": to_bnb_int8, "nf4": to_nf4,
}  # fmt: skip


def quantize_model(model: OpenVLA, mode: QuantMode) -> OpenVLA:
    """Converts `model` in place to `mode` and returns it (in eval mode).

    `fp32`/`bf16` cast the whole model. The quantized modes replace only the decoder's Linear layers and
    leave everything else in the dtype it has: `quantize_model(model.to(torch.bfloat16), "int8")` gives
    int8 layers with bfloat16 attention, norms, towers and `lm_head`.

    Args:
        model: the VLA, with float weights (not already quantized).
        mode: one of `QUANT_MODES`: "fp32", "bf16", "int8", "bnb-int8", "nf4".

    Raises:
        QuantizationError: unknown mode, bitsandbytes missing for "bnb-int8"/"nf4", or a model shape that
            the mode's kernel cannot take.
    """
    quantizer = QUANTIZERS[check_backend(mode)]
    already = [type(m).__name__ for m in decoder_of(model).modules() if _is_quantized_layer(m)]
    if already and mode not in ("fp32", "bf16"):
        raise QuantizationError(f"the model already has quantized layers ({already[0]}); quantize a float model")
    return quantizer(model).eval()


def load_quantized(
    path: str | Path, mode: QuantMode, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> OpenVLA:
    """Loads a checkpoint directory and quantizes it: the equivalent of the original's `load_in_8bit=True`.

    Args:
        path: checkpoint directory (config.json + safetensors).
        mode: quantization mode (see `quantize_model`).
        dtype: dtype of the parts that stay in floating point; default bfloat16 for "bf16", else float32.
            Pass `torch.bfloat16` with "int8" to halve the load-time peak of a large model.
        device: where the model lives ("cpu", or "cuda" for the bitsandbytes modes on a GPU).

    Raises:
        QuantizationError: as `quantize_model`; an unknown mode or a missing bitsandbytes before loading.
    """
    check_backend(mode)  # fail before reading gigabytes
    from vlaforge.model.vla import OpenVLA

    if dtype is None:
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    model = OpenVLA.from_pretrained(path, dtype=dtype, device=device)
    return quantize_model(model, mode)


def load_for_inference(
    path: str | Path, quant: QuantMode = "fp32", dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> OpenVLA:
    """How `vlaforge predict`, `eval` and `serve` load a checkpoint: as saved, or quantized.

    `quant="fp32"` (the default) quantizes nothing: it is the plain `OpenVLA.from_pretrained(path, dtype,
    device)`, so `dtype=torch.bfloat16` still gives bfloat16 weights. Any other mode goes through
    `load_quantized`, with `dtype` as the dtype of the layers that stay float; "bf16" casts every weight
    anyway, so it loads in bfloat16 directly (half the load-time peak of a float32 load).

    Args:
        path: checkpoint directory (config.json + safetensors).
        quant: one of `QUANT_MODES`.
        dtype: weight dtype (None: the checkpoint's own for "fp32", float32 for the quantized modes).
        device: where the model lives.

    Raises:
        QuantizationError: unknown mode or missing bitsandbytes (before anything is read), or a model the
            mode cannot take.
    """
    if check_backend(quant) == "fp32":
        from vlaforge.model.vla import OpenVLA

        return OpenVLA.from_pretrained(path, dtype=dtype, device=device)
    return load_quantized(path, quant, dtype=None if quant == "bf16" else dtype, device=device)


# ------------------------------------------------------------------------------------------- agreement
def action_agreement(reference_ids: torch.Tensor, ids: torch.Tensor, tokenizer: ActionTokenizer) -> tuple[float, float]:
    """How closely a quantized model's greedy actions follow the reference (fp32) model's.

    Args:
        reference_ids: `[N, A]` (or `[N, K, A]`) action token ids of the reference model.
        ids: the same shape, from the model under test, on the same inputs.
        tokenizer: the models' action tokenizer.

    Returns:
        (fraction of action tokens that are identical, mean |action difference| in normalized units [-1, 1]).
    """
    if reference_ids.shape != ids.shape:
        raise ValueError(f"ids of shape {list(ids.shape)} cannot be compared with {list(reference_ids.shape)}")
    agreement = float((reference_ids == ids).float().mean())
    l1 = float(np.abs(tokenizer.decode(ids.cpu().numpy()) - tokenizer.decode(reference_ids.cpu().numpy())).mean())
    return agreement, l1


# ------------------------------------------------------------------------------------------- memory
def _is_quantized_layer(module: nn.Module) -> bool:
    return isinstance(module, Int8Linear) or type(module).__name__ in ("Linear8bitLt", "Linear4bit")


def _bnb_extra_bytes(module: nn.Module) -> int:
    """Bytes bitsandbytes keeps outside `parameters()`: int8 row scales, or the 4-bit block absmax."""
    weight = getattr(module, "weight", None)
    tensors = [getattr(weight, "SCB", None), getattr(getattr(module, "state", None), "SCB", None)]
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:  # 4-bit: per-block absmax (itself 8-bit + fp32 per 256 blocks when nested)
        nested = getattr(quant_state, "state2", None)
        tensors += [quant_state.absmax, quant_state.code, getattr(quant_state, "offset", None)]
        tensors += [nested.absmax, nested.code] if nested is not None else []
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by the model's weights: parameters, buffers and bitsandbytes' quantization statistics."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return total + sum(_bnb_extra_bytes(m) for m in model.modules() if _is_quantized_layer(m))


def linear_weight_bytes(module: nn.Module) -> int:
    """Bytes of the Linear layers (float or quantized) inside `module`: what quantization shrinks."""
    layers = [m for m in module.modules() if type(m) is nn.Linear or _is_quantized_layer(m)]
    return sum(weight_bytes(m) for m in layers)
