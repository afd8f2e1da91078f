"""Greedy decoding: the KV-cache loop equals full recomputation, and batches equal per-sample calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import DynamicCache

from vlaforge.infer.generate import (
    LayerPlan,
    Rotary,
    greedy_decode,
    greedy_generate,
    last_position_layer,
    left_align,
)
from vlaforge.infer.quantize import quantize_rows
from vlaforge.model.vla import OpenVLA


def greedy_by_recomputation(model: OpenVLA, input_ids, pixel_values, n_tokens: int) -> torch.Tensor:
    """Reference decoder: re-runs the full forward pass on the growing sequence for every token."""
    ids = input_ids
    for _ in range(n_tokens):
        with torch.no_grad():
            logits = model(ids, pixel_values).logits
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[:, input_ids.shape[1] :]


@pytest.fixture(scope="module")
def sharp_model():
    """Tiny model re-randomized with larger weights and its action rows of lm_head scaled up, as the
    reference fixture was made: greedy decoding lands on action tokens and depends on the input."""
    from tests.conftest import make_tiny_model

    model = make_tiny_model(seed=3)
    tok = model.action_tokenizer
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        model.language_model.lm_head.weight[tok.first_id : tok.vocab_end] *= 4
    return model


@pytest.fixture(scope="module")
def int8_model(sharp_model):
    import copy

    from vlaforge.infer.quantize import quantize_model

    return quantize_model(copy.deepcopy(sharp_model), "int8")


def test_kv_cache_equals_full_recomputation(sharp_model):
    batch = sharp_model.processor(np.full((64, 80, 3), 90, np.uint8), "open the drawer")
    cached = greedy_generate(sharp_model, batch["input_ids"], batch["pixel_values"], None, n_tokens=7)
    recomputed = greedy_by_recomputation(sharp_model, batch["input_ids"], batch["pixel_values"], 7)
    assert cached.tolist() == recomputed.tolist()
    assert sharp_model.action_tokenizer.is_action_token(cached.numpy()).all()


@pytest.mark.parametrize("model_name", ["sharp_model", "int8_model"])
def test_ids_equal_hugging_face_generate(model_name, request):
    """The loop drives the decoder layers itself; its ids are those of `generate` on the same embeddings,
    also with int8 layers (where q, k, v and gate, up share one quantization of their input)."""
    model = request.getfixturevalue(model_name)
    for seed in range(3):
        image = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        batch = model.processor(image, "push the red button down")
        with torch.inference_mode():
            embeds = model.embed_inputs(batch["input_ids"], batch["pixel_values"]).embeds
            reference = model.language_model.generate(
                inputs_embeds=embeds, max_new_tokens=7, do_sample=False, eos_token_id=None
            )
        ours = greedy_generate(model, batch["input_ids"], batch["pixel_values"], None, n_tokens=7)
        assert ours.tolist() == reference.tolist()


def test_greedy_decode_of_padded_embeddings_equals_hugging_face_generate(sharp_model):
    """From right-padded multimodal embeddings (prompts of different lengths): the ids of `generate`, which
    takes them left-padded, row by row."""
    images = [np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8) for seed in range(3)]
    batch = sharp_model.processor(images, ["open", "push the red button all the way down", "close the window"])
    assert (batch["attention_mask"] == 0).any()  # the rows really are padded
    with torch.inference_mode():
        inputs = sharp_model.embed_inputs(batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
        ours = greedy_decode(sharp_model.language_model, inputs.embeds, inputs.attention_mask, n_tokens=7)
        for row in range(3):
            length = int(inputs.attention_mask[row].sum())
            reference = sharp_model.language_model.generate(
                inputs_embeds=inputs.embeds[row : row + 1, :length],
                max_new_tokens=7,
                do_sample=False,
                eos_token_id=None,
            )
            assert ours[row].tolist() == reference[0].tolist()


def test_last_position_layer_is_the_decoder_layer(sharp_model):
    """keep = L and keep = 1 of one token: bitwise the HF layer (fused norm, rolled rotary, direct SDPA).
    keep = 1 of a sequence: its last row, with the same keys and values cached."""
    decoder = sharp_model.language_model.get_decoder()
    layer = decoder.layers[-1]
    hidden = torch.randn(2, 5, decoder.config.hidden_size, generator=torch.Generator().manual_seed(0))  # [B, L, D]
    tables = decoder.rotary_emb(hidden, torch.arange(5)[None])  # cos, sin [1, L, hd]
    rope, plan = Rotary.of(tables), LayerPlan.of(layer, hidden.dtype)
    with torch.inference_mode():
        full_cache, last_cache, ours_cache = DynamicCache(), DynamicCache(), DynamicCache()
        full = layer(hidden, position_embeddings=tables, cache=full_cache)  # [B, L, D]
        assert torch.equal(last_position_layer(plan, hidden, rope, ours_cache, None, keep=5), full)
        last = last_position_layer(plan, hidden, rope, last_cache, None)  # [B, 1, D]
        torch.testing.assert_close(last, full[:, -1:], rtol=1e-5, atol=1e-5)
        index = layer.self_attn.layer_idx
        assert torch.equal(last_cache.layers[index].keys, full_cache.layers[index].keys)
        assert torch.equal(ours_cache.layers[index].values, full_cache.layers[index].values)
        step = hidden[:, -1:]  # [B, 1, D]
        assert torch.equal(
            last_position_layer(plan, step, rope.at(4, 5), DynamicCache(), None),
            layer(step, position_embeddings=(tables[0][:, -1:], tables[1][:, -1:]), cache=DynamicCache()),
        )


def test_last_position_layer_with_a_padding_mask_is_the_decoder_layer(sharp_model):
    decoder = sharp_model.language_model.get_decoder()
    layer = decoder.layers[0]
    hidden = torch.randn(2, 6, decoder.config.hidden_size, generator=torch.Generator().manual_seed(1))  # [B, L, D]
    tables = decoder.rotary_emb(hidden, torch.arange(6)[None])  # cos, sin [1, L, hd]
    mask = torch.full((2, 1, 6, 6), torch.finfo(torch.float32).min).triu(1)  # [B, 1, L, L] causal
    mask[0, :, :, :2] = torch.finfo(torch.float32).min  # row 0: two left-padding keys hidden
    mask[0, :, :2, :2] = 0.0  # (padding queries see themselves, as transformers' mask lets them)
    with torch.inference_mode():
        reference = layer(hidden, attention_mask=mask, position_embeddings=tables)  # [B, L, D]
        plan = LayerPlan.of(layer, hidden.dtype)
        ours = last_position_layer(plan, hidden, Rotary.of(tables), None, mask, keep=6)  # [B, L, D]
    assert torch.equal(ours, reference)


def test_rotary_roll_equals_rotate_half():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 5, 8, generator=generator)  # [B, H, L, hd]
    angles = torch.randn(1, 5, 4, generator=generator).repeat(1, 1, 2)  # [1, L, hd] as Llama's tables
    cos, sin = angles.cos(), angles.sin()
    reference, _ = apply_rotary_pos_emb(x, x, cos, sin)
    assert torch.equal(Rotary.of((cos, sin)).rotate(x), reference)
    assert torch.equal(Rotary.of((cos, sin)).at(1, 3).rotate(x[:, :, 1:3]), reference[:, :, 1:3])


@pytest.mark.slow  # compiles prefill and decode step with inductor (~30 s on a CPU)
def test_torch_compile_gives_the_same_ids(sharp_model):
    batch = sharp_model.processor(np.full((64, 80, 3), 90, np.uint8), "open the drawer")
    args = (sharp_model, batch["input_ids"], batch["pixel_values"], None, 7)
    assert greedy_generate(*args, torch_compile=True).tolist() == greedy_generate(*args).tolist()


def test_batched_predict_action_equals_per_sample_calls(sharp_model):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (96, 96, 3), dtype=np.uint8) for _ in range(4)]
    instructions = ["open the drawer", "push the red button down hard", "close", "pick up the can and place it"]
    batched = sharp_model.predict_action(images, instructions)
    single = np.stack([sharp_model.predict_action(img, text) for img, text in zip(images, instructions)])
    assert batched.shape == (4, 7)
    np.testing.assert_array_equal(batched, single)
    assert len({tuple(row) for row in single}) > 1  # the inputs really differ in what they produce


def test_left_align_moves_padding_to_the_front():
    embeds = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    aligned, aligned_mask = left_align(embeds, mask)
    assert aligned_mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert aligned[1, 2:, 0].tolist() == [4.0, 5.0]
    assert aligned[0, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_linear_fn_runs_quantized_and_hooked_layers_through_their_module_call():
    from torch import nn

    from vlaforge.infer.generate import linear_fn

    layer, x = nn.Linear(4, 3), torch.randn(2, 4)
    assert torch.equal(linear_fn(layer)(x), layer(x))
    calls = []
    layer.register_forward_hook(lambda module, args, out: calls.append(out.shape))
    linear_fn(layer)(x)
    assert calls == [torch.Size([2, 3])]  # the hook saw the call

    class Scaled(nn.Linear):  # stands for a quantized or LoRA layer: another class with its own forward
        def forward(self, inputs):
            return 2 * super().forward(inputs)

    scaled = Scaled(4, 3)
    assert torch.equal(linear_fn(scaled)(x), 2 * nn.functional.linear(x, scaled.weight, scaled.bias))


def test_linear_fn_of_an_int8_layer_is_its_arithmetic_without_the_module_call():
    from torch import nn

    from vlaforge.infer.generate import linear_fn
    from vlaforge.infer.quantize import Int8Linear

    layer, x = Int8Linear.from_linear(nn.Linear(8, 5)), torch.randn(3, 8)
    assert linear_fn(layer) is not layer
    assert torch.equal(linear_fn(layer)(x), layer(x))
    layer.register_forward_hook(lambda module, args, out: None)
    assert linear_fn(layer) is layer  # hooked: the module call, so the hook runs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_fn_is_the_llama_rms_norm_bit_for_bit(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from vlaforge.infer.generate import norm_fn

    norm = LlamaRMSNorm(48, eps=1e-6).to(dtype)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48, generator=generator))
    for rows in (1, 7, 114):
        x = (10 * torch.randn(rows, 48, generator=generator)).to(dtype)
        assert torch.equal(norm_fn(norm, dtype)(x), norm(x))


def test_eager_attention_loop_is_causal_without_padding():
    """Eager attention has no causal flag: an unpadded prefill must get an explicit causal mask."""
    from tests.conftest import make_tiny_model
    from vlaforge.bench.infer import sharpen_

    model = sharpen_(make_tiny_model(seed=5), seed=5)  # unit-gain weights: attention patterns change the ids
    model.language_model.config._attn_implementation = "eager"
    embeds = torch.randn(1, 9, model.language_model.config.hidden_size, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        reference = model.language_model.generate(
            inputs_embeds=embeds, max_new_tokens=7, do_sample=False, eos_token_id=None
        )  # [1, 7]
        assert torch.equal(greedy_decode(model.language_model, embeds, None, 7), reference)


def test_int8_layer_quantizes_shared_inputs_once_and_equals_the_decoder_layer(int8_model, monkeypatch):
    """q, k, v (and gate, up) read one int8 copy of their input: 4 quantizations per layer instead of 7,
    with the output of the HF layer bit for bit (codes are per row, so sharing changes no product)."""
    from vlaforge.infer import generate

    counted = []
    monkeypatch.setattr(generate, "quantize_rows", lambda x: counted.append(x.shape) or quantize_rows(x))
    decoder = int8_model.language_model.get_decoder()
    layer = decoder.layers[-1]
    hidden = torch.randn(2, 5, decoder.config.hidden_size, generator=torch.Generator().manual_seed(2))  # [B, L, D]
    tables = decoder.rotary_emb(hidden, torch.arange(5)[None])  # cos, sin [1, L, hd]
    plan = LayerPlan.of(layer, hidden.dtype)
    with torch.inference_mode():
        reference = layer(hidden, position_embeddings=tables, cache=DynamicCache())  # [B, L, D]
        ours = last_position_layer(plan, hidden, Rotary.of(tables), DynamicCache(), None, keep=5)
        assert torch.equal(ours, reference)
        assert len(counted) == 4  # q|k|v, o, gate|up, down
        last = last_position_layer(plan, hidden, Rotary.of(tables), DynamicCache(), None)  # [B, 1, D]
        torch.testing.assert_close(last, reference[:, -1:], rtol=1e-5, atol=1e-5)
    assert counted[4] == (10, decoder.config.hidden_size)  # the last layer's q|k|v: every row quantized once
