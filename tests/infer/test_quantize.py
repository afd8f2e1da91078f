"""Quantized inference: every mode loads, predicts, and stays within its documented distance of fp32.

Tolerances (docs/quantization.md), measured on the tiny model with `sharpen_` random weights and these 12
held-out observations: relative logit error bf16 0.011, int8 0.021, bnb-int8 0.021, nf4 0.21; greedy
action-token agreement with fp32 (action L1) bf16 0.90 (0.06), int8 0.70 (0.25), bnb-int8 0.73 (0.25).
Random weights leave small logit margins, so one early flip changes the rest of an action: the bounds leave
room for that, and still sit far from a broken kernel (logit error ~1, agreement ~1/256, L1 ~0.67).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from vlaforge.bench.infer import make_inputs, predict_ids, sharpen_
from vlaforge.infer.quantize import (
    QUANT_MODES,
    Int8Linear,
    QuantizationError,
    action_agreement,
    decoder_of,
    linear_weight_bytes,
    load_quantized,
    quantize_model,
)

N_ACTION = 7
HELD_OUT = 12
LOGIT_TOLERANCE = {"bf16": 0.03, "int8": 0.05, "bnb-int8": 0.05, "nf4": 0.35}  # relative L2 error vs fp32
MIN_AGREEMENT = 0.5  # action tokens equal to fp32's (bf16, int8)
MAX_ACTION_L1 = 0.4  # mean |action - fp32 action|, normalized units in [-1, 1]

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def reference():
    """fp32 sharpened tiny model, held-out inputs, its logits and its greedy action ids."""
    from tests.conftest import make_tiny_model

    model = sharpen_(make_tiny_model(), seed=0)
    inputs = make_inputs(model, HELD_OUT, seed=1)
    with torch.inference_mode():
        logits = model(inputs.input_ids, inputs.pixel_values, inputs.attention_mask).logits
    return model, inputs, logits, predict_ids(model, inputs, batch=HELD_OUT)


@pytest.mark.parametrize("mode", ["bf16", "int8", "bnb-int8", "nf4"])
def test_quantized_logits_stay_close_to_fp32(reference, mode):
    model, inputs, ref_logits, _ = reference
    quantized = quantize_model(copy.deepcopy(model), mode)
    with torch.inference_mode():
        logits = quantized(inputs.input_ids, inputs.pixel_values, inputs.attention_mask).logits.float()
    error = float((logits - ref_logits).norm() / ref_logits.norm())
    assert 0 < error < LOGIT_TOLERANCE[mode]  # > 0: the model really changed


@pytest.mark.parametrize("mode", ["bf16", "int8"])  # bnb-int8 (0.73, slow on the CPU): logits test only
def test_quantized_actions_agree_with_fp32(reference, mode):
    model, inputs, _, ref_ids = reference
    ids = predict_ids(quantize_model(copy.deepcopy(model), mode), inputs, batch=HELD_OUT)
    agreement, l1 = action_agreement(ref_ids, ids, model.action_tokenizer)
    assert agreement >= MIN_AGREEMENT
    assert l1 <= MAX_ACTION_L1
    assert model.action_tokenizer.is_action_token(ids.numpy()).all()


def test_int8_replaces_decoder_linears_only_and_shrinks_them(reference):
    model = reference[0]
    quantized = quantize_model(copy.deepcopy(model), "int8")
    decoder = decoder_of(quantized)
    assert not any(type(m) is nn.Linear for m in decoder.modules())
    n_layers = model.language_model.config.num_hidden_layers
    assert sum(isinstance(m, Int8Linear) for m in decoder.modules()) == 7 * n_layers  # q k v o gate up down
    assert type(quantized.language_model.lm_head) is nn.Linear  # lm_head and embeddings stay float
    assert type(quantized.projector.fc1) is nn.Linear
    ratio = linear_weight_bytes(decoder) / linear_weight_bytes(decoder_of(model))
    assert 0.25 < ratio < 0.27  # int8 weights (1/4 of fp32) + one fp32 scale per output channel


def test_nf4_shrinks_decoder_linears_to_about_an_eighth(reference):
    model = reference[0]
    quantized = quantize_model(copy.deepcopy(model), "nf4")
    ratio = linear_weight_bytes(decoder_of(quantized)) / linear_weight_bytes(decoder_of(model))
    # 4-bit codes (1/8) + an 8-bit absmax per 64 weights + ~1.1 KB of tables per layer (visible at width 64)
    assert 1 / 8 < ratio < 0.2


def test_int8_linear_is_exact_on_the_quantization_grid():
    # Weights and inputs already on the int8 grid: quantization loses nothing, so only float rounding remains.
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(40, 24, bias=True)
    with torch.no_grad():
        codes = torch.randint(-126, 127, (24, 40), generator=generator).float()
        codes[:, 0] = 127  # every row's max |w| is 127 steps
        linear.weight.copy_(codes * 0.01)
    x = torch.randint(-126, 127, (3, 5, 40), generator=generator).float()
    x[..., 0] = 127
    expected = linear(x)
    out = Int8Linear.from_linear(linear)(x)
    assert out.shape == (3, 5, 24) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-3)
    assert Int8Linear.from_linear(linear)(x.bfloat16()).dtype == torch.bfloat16


def test_int8_activation_codes_need_no_clamp():
    """int8_linear rounds x / scale without clamping to [-127, 127]: the row's max maps to 127 within float
    rounding, so the result equals the clamped formula bit for bit, for any row scale (also below MIN_SCALE)."""
    from vlaforge.infer.quantize import INT8_MAX, MIN_SCALE, int8_linear

    layer = Int8Linear.from_linear(nn.Linear(64, 16))
    generator = torch.Generator().manual_seed(1)
    for scale in (1e-12, 1e-3, 1.0, 1e4):
        x = torch.randn(9, 64, generator=generator) * scale  # [M, K]
        row_scale = x.abs().amax(dim=1, keepdim=True).clamp(min=MIN_SCALE) / INT8_MAX  # [M, 1]
        codes = (x / row_scale).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)  # [M, K]
        clamped = (codes.float() @ layer.qweight.float().t()) * row_scale * layer.weight_scale + layer.bias
        assert torch.equal(int8_linear(x, layer.qweight, layer.weight_scale, layer.bias), clamped)


def test_int8_linear_leaves_the_float_layer_untouched():
    linear = nn.Linear(16, 8)
    before = linear.weight.detach().clone()
    Int8Linear.from_linear(linear)
    assert torch.equal(linear.weight, before)


def test_int8_linear_error_on_random_weights_is_about_one_percent():
    generator = torch.Generator().manual_seed(0)
    linear = nn.Linear(512, 256)
    x = torch.randn(16, 512, generator=generator)
    expected = linear(x).detach()
    error = float((Int8Linear.from_linear(linear)(x) - expected).norm() / expected.norm())
    assert 0.001 < error < 0.02  # measured 0.009 (bitsandbytes' LLM.int8() gives the same)


def test_unknown_mode_lists_the_valid_ones(reference, tmp_path):
    with pytest.raises(QuantizationError, match="valid modes: fp32, bf16, int8, bnb-int8, nf4"):
        quantize_model(copy.deepcopy(reference[0]), "int4")
    with pytest.raises(QuantizationError, match="unknown quantization mode 'fp8'"):
        load_quantized(tmp_path / "no-such-checkpoint", "fp8")  # rejected before touching the disk


def test_quantizing_twice_is_refused(reference):
    quantized = quantize_model(copy.deepcopy(reference[0]), "int8")
    with pytest.raises(QuantizationError, match="already has quantized layers"):
        quantize_model(quantized, "nf4")


def test_nf4_on_cpu_needs_widths_that_are_multiples_of_32():
    from vlaforge.config import get_preset
    from vlaforge.model.vla import OpenVLA

    config = get_preset("tiny")
    config.text_config["intermediate_size"] = 200
    with pytest.raises(QuantizationError, match=r"multiple of 32.*\[200\]"):
        quantize_model(OpenVLA(config), "nf4")


def test_load_quantized_checkpoint_predicts_like_in_memory_quantization(tiny_checkpoint, tiny_model):
    image = np.full((64, 64, 3), 120, np.uint8)
    loaded = load_quantized(tiny_checkpoint, "int8")
    action = loaded.predict_action(image, "open the drawer")
    expected = quantize_model(copy.deepcopy(tiny_model), "int8").predict_action(image, "open the drawer")
    assert action.shape == (N_ACTION,) and np.isfinite(action).all()
    np.testing.assert_array_equal(action, expected)
    assert isinstance(loaded.language_model.model.layers[0].mlp.up_proj, Int8Linear)


def test_action_agreement_counts_tokens_and_action_distance(tiny_model):
    tokenizer = tiny_model.action_tokenizer
    reference = torch.full((2, 4), tokenizer.first_id + 100)
    other = reference.clone()
    other[0, 0] += 2  # two bins away
    agreement, l1 = action_agreement(reference, other, tokenizer)
    assert agreement == pytest.approx(7 / 8)
    bin_width = float(np.diff(tokenizer.bin_centers)[0])
    assert l1 == pytest.approx(2 * bin_width / 8)
    with pytest.raises(ValueError, match="cannot be compared"):
        action_agreement(reference, other[:, :3], tokenizer)


def test_every_mode_is_covered():
    assert QUANT_MODES == ("fp32", "bf16", "int8", "bnb-int8", "nf4")


def test_quantized_rows_of_the_last_positions_are_those_quantized_alone():
    """Codes are per row: taking the last positions of quantized rows equals quantizing those rows alone,
    which is what lets q (last position only) share the prefill's quantization with k and v."""
    from vlaforge.infer.generate import last_rows
    from vlaforge.infer.quantize import quantize_rows

    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(3)).bfloat16()  # [B, L, D]
    taken = last_rows(quantize_rows(x.reshape(12, 32)), batch=2, keep=2)
    alone = quantize_rows(x[:, -2:].reshape(4, 32))
    assert torch.equal(taken.codes, alone.codes) and torch.equal(taken.scale, alone.scale)
    assert taken.dtype == alone.dtype == torch.bfloat16
    assert taken.codes.dtype == torch.int8 and int(taken.codes.abs().max()) == 127  # each row's max maps to 127
