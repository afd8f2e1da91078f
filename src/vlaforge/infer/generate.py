"""Greedy decoding of action tokens with a KV cache, for any batch size.

OpenVLA decodes its A action tokens with Hugging Face `generate` and refuses batches. Here the loop is
written out: one prefill pass over `[BOS | patches | prompt]`, then A - 1 single-token passes that reuse the
KV cache. Batches with prompts of different lengths are left-aligned first (padding moved to the front,
positions counted from each row's first real token), so every row sees exactly what it would see alone.

The loop drives the LLM's decoder layers itself instead of calling the model's `forward` once per token,
which rebuilds the attention mask, the rotary tables and the output objects every time (~40% of a
decode step of the tiny preset). Rotary tables are computed once for all positions, a mask only when a row
is padded, and greedy decoding only ever reads the last position, so its layer runs for that one
position (`last_position_layer`): in the prefill, the last layer computes queries, attention and MLP for
one token instead of S. Every op is the one `LlamaDecoderLayer` runs, so the ids are those of HF `generate`
(decode steps are bitwise equal; the trimmed last prefill layer multiplies 1 row instead of S, which moves
logits by ~1e-6). `torch_compile=True` also compiles prefill and decode step (opt-in, see `compiled`).

Deviation from the original (documented in docs/design.md): decoding always produces A tokens; HF
`generate` would stop early at EOS and then read prompt tokens as actions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, eager_attention_forward, rotate_half

if TYPE_CHECKING:
    from vlaforge.model.vla import OpenVLA

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin: [B, L, hd] rotary tables of L positions


def left_align(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves each row's right padding to the front. `[B, S, D], [B, S] -> [B, S, D], [B, S]`."""
    seq_len = mask.shape[1]
    shift = seq_len - mask.sum(dim=1)  # [B] padding per row
    positions = torch.arange(seq_len, device=mask.device)  # [S]
    source = (positions[None, :] - shift[:, None]) % seq_len  # [B, S] where each new slot reads from
    aligned = embeds.gather(1, source[..., None].expand(-1, -1, embeds.shape[-1]))  # [B, S, D]
    return aligned, mask.gather(1, source)


def llama_layers(llm: nn.Module) -> bool:
    """True when the LLM's decoder layers are Llama's, which the functions below drive one by one."""
    return isinstance(llm.get_decoder().layers[0], LlamaDecoderLayer)


def last_position_layer(
    layer: LlamaDecoderLayer,
    hidden: torch.Tensor,
    rope: Rope,
    cache: DynamicCache | None,
    mask: torch.Tensor | None,
    keep: int = 1,
) -> torch.Tensor:
    """A decoder layer whose output is computed for the last `keep` positions only. `[B, L, D] -> [B, keep, D]`.

    Keys and values of all L positions are computed (and appended to `cache` when one is given: later tokens
    attend to them); the queries, the attention and the MLP run for the last `keep` positions alone. With
    L = keep = 1 (a decode step) this is exactly `LlamaDecoderLayer`, op for op; in a prefill it skips most
    of the last layer's work, as it does for the prompt positions of a parallel-decoding pass.

    Args:
        layer: one layer of the Llama decoder.
        hidden: `[B, L, D]` input of the layer.
        rope: cos and sin `[B, L, hd]` of the L positions (`LlamaRotaryEmbedding`).
        cache: the KV cache this layer's keys and values are appended to, or None (a single pass).
        mask: the kept queries' rows of the model's attention mask, `[B, 1, keep, L_cache + L]`, or None when
            no key is hidden from them (no padding, and causal order is irrelevant for the last position).
        keep: how many positions, counted from the end, the output covers.
    """
    attn = layer.self_attn
    batch, length, _ = hidden.shape
    cos, sin = (table[:, None] for table in rope)  # [B, 1, L, hd], broadcast over heads
    normed = layer.input_layernorm(hidden)  # [B, L, D]
    keys = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)  # [B, Hkv, L, hd]
    values = attn.v_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)  # [B, Hkv, L, hd]
    query = attn.q_proj(normed[:, -keep:]).view(batch, keep, -1, attn.head_dim).transpose(1, 2)  # [B, H, keep, hd]
    # rotary embedding, as transformers' apply_rotary_pos_emb (the kept queries' positions only)
    query = query * cos[:, :, -keep:] + rotate_half(query) * sin[:, :, -keep:]  # [B, H, keep, hd]
    keys = keys * cos + rotate_half(keys) * sin  # [B, Hkv, L, hd]
    if cache is not None:
        keys, values = cache.update(keys, values, attn.layer_idx)  # [B, Hkv, L_cache + L, hd]
    attention = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    out, _ = attention(attn, query, keys, values, mask, dropout=0.0, scaling=attn.scaling)  # [B, keep, H, hd]
    hidden = hidden[:, -keep:] + attn.o_proj(out.reshape(batch, keep, -1))  # [B, keep, D]
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))  # [B, keep, D]


def last_hidden_states(
    llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int
) -> torch.Tensor:
    """The decoder's final (normed) hidden states of the last `keep` positions, in one pass without a cache.

    What `llm.model(...).last_hidden_state[:, -keep:]` gives, with the last layer computed for those
    positions only (`last_position_layer`). Inference of the parallel heads uses it: they read the K*A action
    positions at the end of the sequence. `[B, L, D] -> [B, keep, D]`.

    Args:
        llm: the causal LM (`LlamaForCausalLM`).
        embeds: `[B, L, D]` input embeddings.
        mask: `[B, 1, L, L]` additive attention mask (as the model's forward would be given).
        positions: `[B, L]` position of every token.
        keep: number of positions at the end whose hidden states are returned.
    """
    decoder = llm.get_decoder()
    rope = decoder.rotary_emb(embeds, positions)  # cos, sin [B, L, hd]
    hidden = embeds
    for layer in decoder.layers[:-1]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rope)  # [B, L, D]
    hidden = last_position_layer(decoder.layers[-1], hidden, rope, None, mask[:, :, -keep:], keep)  # [B, keep, D]
    return decoder.norm(hidden)  # [B, keep, D]


def prefill(
    llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor, cache: DynamicCache
) -> torch.Tensor:
    """Runs the whole sequence through the LLM, filling `cache`. Returns the last position's logits `[B, V]`.

    Args:
        llm: the causal LM (`LlamaForCausalLM`).
        embeds: `[B, S, D]` left-aligned multimodal embeddings.
        mask: `[B, S]` (0 on padding) or None (no padding).
        positions: `[B, S]` or `[1, S]` position of every token.
        cache: an empty KV cache.
    """
    decoder = llm.get_decoder()
    # what LlamaModel.forward builds: None without padding (SDPA's is_causal), else [B, 1, S, S]
    causal = create_causal_mask(decoder.config, embeds, mask, cache, position_ids=positions)
    rope = decoder.rotary_emb(embeds, positions)  # cos, sin [B, S, hd]
    hidden = embeds
    for layer in decoder.layers[:-1]:
        hidden = layer(hidden, attention_mask=causal, position_embeddings=rope, cache=cache)  # [B, S, D]
    last_row = None if causal is None else causal[:, :, -1:]  # [B, 1, 1, S]
    hidden = last_position_layer(decoder.layers[-1], hidden, rope, cache, last_row)  # [B, 1, D]
    return llm.lm_head(decoder.norm(hidden[:, -1]))  # [B, V]


def decode_step(
    llm: nn.Module, ids: torch.Tensor, rope: Rope, cache: DynamicCache, mask: torch.Tensor | None
) -> torch.Tensor:
    """One token through every layer, appending its keys and values to `cache`. `[B] -> [B, V]` logits.

    `rope` holds this token's cos and sin `[B, 1, hd]`; `mask` is the model's attention mask `[B, 1, 1, S + t]`
    or None (no padding: the new token attends to every cached one).
    """
    decoder = llm.get_decoder()
    hidden = decoder.embed_tokens(ids)[:, None]  # [B, 1, D]
    for layer in decoder.layers:
        hidden = last_position_layer(layer, hidden, rope, cache, mask)  # [B, 1, D]
    return llm.lm_head(decoder.norm(hidden[:, -1]))  # [B, V]


@functools.cache
def compiled(fn: Callable) -> Callable:
    """`fn` through `torch.compile` (inductor, dynamic shapes), wrapped once per process.

    Opt-in only: the first call per model compiles for ~30 s and needs a C++ compiler on the CPU. Inductor
    fuses the norms, rotary and MLP elementwise ops, so logits may differ from eager in the last bits.
    """
    return torch.compile(fn, dynamic=True)


@torch.inference_mode()
def greedy_generate(
    model: OpenVLA,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    n_tokens: int,
    proprio: torch.Tensor | None = None,
    torch_compile: bool = False,
) -> torch.Tensor:
    """Greedy ids of the next `n_tokens` tokens for every row. Returns `[B, n_tokens]`.

    Args:
        model: the VLA (its LLM a Llama, as OpenVLA's).
        input_ids: `[B, T]` right-padded prompts (ending with the action-prefix token).
        pixel_values: `[B, C, H, W]`.
        attention_mask: `[B, T]` (0 on padding) or None when no row is padded.
        n_tokens: number of tokens to decode (the action dimension).
        proprio: `[B, Dp]` normalized robot state, for models with a proprio token.
        torch_compile: run prefill and decode steps through `torch.compile` (opt-in, see `compiled`).
    """
    llm = model.language_model
    decoder = llm.get_decoder()
    if not llama_layers(llm):
        raise TypeError(f"greedy_generate drives Llama decoder layers; this LLM has {type(decoder.layers[0])}")
    inputs = model.embed_inputs(input_ids, pixel_values, attention_mask, proprio=proprio)
    embeds, mask = inputs.embeds, inputs.attention_mask  # [B, S, D], [B, S] | None
    if mask is not None and bool((mask == 0).any()):
        embeds, mask = left_align(embeds, mask)
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, S] each row counts from 0
    else:
        mask = None  # no padding: the causal mask alone is exact and cheaper
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None]  # [1, S]
    run_prefill, run_step = (compiled(prefill), compiled(decode_step)) if torch_compile else (prefill, decode_step)
    cache = DynamicCache()
    next_ids = run_prefill(llm, embeds, mask, positions, cache).argmax(dim=-1)  # [B]
    new_positions = positions[:, -1:] + torch.arange(1, n_tokens, device=embeds.device)  # [B, A - 1]
    cos, sin = decoder.rotary_emb(embeds, new_positions)  # [B, A - 1, hd] each, computed once
    generated = [next_ids]
    for step in range(n_tokens - 1):
        step_mask = None
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, S + step + 1]
            step_mask = create_causal_mask(  # reads only the shape and dtype of embeds[:, :1], [B, 1, D]
                decoder.config, embeds[:, :1], mask, cache, position_ids=new_positions[:, step : step + 1]
            )  # [B, 1, 1, S + step + 1]
        rope = (cos[:, step : step + 1], sin[:, step : step + 1])  # [B, 1, hd] each
        next_ids = run_step(llm, next_ids, rope, cache, step_mask).argmax(dim=-1)  # [B]
        generated.append(next_ids)
    return torch.stack(generated, dim=1)  # [B, n_tokens]
