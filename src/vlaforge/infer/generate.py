"""Greedy decoding of action tokens with a KV cache, for any batch size.

OpenVLA decodes its A action tokens with Hugging Face `generate` and refuses batches. Here the loop is
written out: one prefill pass over `[BOS | patches | prompt]`, then A - 1 single-token passes that reuse the
KV cache. Batches with prompts of different lengths are left-aligned first (padding moved to the front,
positions counted from each row's first real token), so every row sees exactly what it would see alone.

The loop drives the LLM's decoder layers itself instead of calling the model's `forward` once per token, which
rebuilds the attention mask, the rotary tables and the output objects every time (~40% of a decode step of the
tiny preset). Rotary tables are computed once per call for the prompt and every new token, a mask only when a
row is padded, and greedy decoding only ever reads the last position, so its layer runs for that one position
(`last_position_layer`): in the prefill, the last layer computes queries, attention and MLP for one token
instead of S. The layer does the arithmetic of `LlamaDecoderLayer` in fewer ops, each with the same result bit
for bit: one `F.rms_norm` call instead of six Python-level ops (on the CPU, ATen still runs the steps one by
one inside that call), the rotation as one `roll` against a sign-folded sin table (`Rotary`) instead of
slice-slice-negate-concatenate, SDPA called directly, and plain `nn.Linear` layers as `F.linear` on token rows
`[N, D]` without the module calls (`linear_fn`, `mlp_fn`; vlaforge's int8 layers as their arithmetic too, with
one activation quantization shared by q, k, v and one by gate, up; other quantized and LoRA layers keep their
own forward). Each call resolves the layers into these functions once (`DecoderPlan`), so the tokens after the
first pay no module lookups. So the ids are those of HF `generate` (decode steps are bitwise equal; the
trimmed last prefill layer multiplies 1 row instead of S, which moves logits by ~1e-6). `torch_compile=True`
also compiles prefill and decode step (opt-in, see `compiled`).

Deviation from the original (documented in docs/design.md): decoding always produces A tokens; HF
`generate` would stop early at EOS and then read prompt tokens as actions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaMLP,
    LlamaRMSNorm,
    eager_attention_forward,
)

from vlaforge.infer.quantize import Int8Linear, QuantizedRows, int8_product, quantize_rows

if TYPE_CHECKING:
    from vlaforge.model.vla import OpenVLA


class Rotary(NamedTuple):
    """Rotary tables of L positions `[B, 1, L, hd]` (broadcast over heads): HF's cos, and its sin half-negated.

    transformers rotates with `x * cos + rotate_half(x) * sin`, where rotate_half(x) = [-x2, x1]. Folding
    the sign into the table gives `x * cos + roll(x, hd / 2) * signed_sin`: the same products (negation is
    exact), in 1 op instead of 4.
    """

    cos: torch.Tensor  # [B, 1, L, hd]
    signed_sin: torch.Tensor  # [B, 1, L, hd]: [-sin_1, sin_2] (halves)

    @classmethod
    def of(cls, tables: tuple[torch.Tensor, torch.Tensor]) -> Rotary:
        """From `LlamaRotaryEmbedding`'s (cos, sin), each `[B, L, hd]`."""
        cos, sin = tables
        half = sin.shape[-1] // 2
        signed_sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)  # [B, L, hd]
        return cls(cos[:, None], signed_sin[:, None])  # [B, 1, L, hd] each, broadcast over heads

    def at(self, start: int, stop: int) -> Rotary:
        """The tables of positions start..stop-1 (of the L)."""
        return Rotary(*(table[:, :, start:stop] for table in self))  # [B, 1, stop - start, hd] each

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of `x` `[B, H, L, hd]` at the tables' L positions (as `apply_rotary_pos_emb`)."""
        return x * self.cos + x.roll(x.shape[-1] // 2, dims=-1) * self.signed_sin  # [B, H, L, hd]


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


Fn = Callable[[torch.Tensor], torch.Tensor]
Rows = torch.Tensor | QuantizedRows  # rows [N, D] of a projection's input, or their int8 codes


def bare(module: nn.Module, cls: type[nn.Module]) -> bool:
    """True when `module` is exactly a `cls` without forward hooks: running its arithmetic directly is the same."""
    return type(module) is cls and not (module._forward_hooks or module._forward_pre_hooks)


def linear_fn(layer: nn.Module) -> Fn:
    """`layer` as a function; a plain `nn.Linear` becomes `F.linear` on its weights: no module call (~2.5 µs).

    vlaforge's `Int8Linear` becomes its arithmetic likewise, and also takes rows quantized already
    (`QuantizedRows`, see `shared_input_fn`). Other quantized layers, LoRA layers (other classes) and hooked
    layers keep their module call.
    """
    if bare(layer, nn.Linear):
        weight, bias = layer.weight, layer.bias
        return lambda x: F.linear(x, weight, bias)
    if bare(layer, Int8Linear):
        qweight, weight_scale, bias = layer.qweight, layer.weight_scale, layer.bias

        def int8(rows: Rows) -> torch.Tensor:
            rows = rows if isinstance(rows, QuantizedRows) else quantize_rows(rows)  # [N, K] codes and scales
            return int8_product(rows, qweight, weight_scale, bias)  # [N, out]

        return int8
    return layer


def shared_input_fn(layers: tuple[nn.Module, ...]) -> Callable[[torch.Tensor], Rows]:
    """What projections reading one input `[N, D]` (q, k, v; gate, up) can share before their products.

    When all are vlaforge `Int8Linear` layers, the input's int8 rows: quantized once instead of once per
    layer (the codes are per row, so each product is bitwise what its module computes). Otherwise the
    input itself.
    """
    return quantize_rows if all(bare(layer, Int8Linear) for layer in layers) else same


def same(x: torch.Tensor) -> torch.Tensor:
    """The input, unchanged."""
    return x


def last_rows(rows: Rows, batch: int, keep: int) -> Rows:
    """The rows of the last `keep` positions of each of `batch` sequences, from rows `[B*L, D]`.

    Int8 rows: their codes and their scales alike (both are per row).
    """
    if isinstance(rows, QuantizedRows):
        return QuantizedRows(last_rows(rows.codes, batch, keep), last_rows(rows.scale, batch, keep), rows.dtype)
    return rows.view(batch, -1, rows.shape[-1])[:, -keep:].reshape(batch * keep, -1)  # [B*keep, D]


def embedding_fn(embedding: nn.Module) -> Fn:
    """`embedding` as a function of token ids; a plain `nn.Embedding` becomes `F.embedding` (no module call)."""
    if bare(embedding, nn.Embedding) and embedding.max_norm is None:
        weight = embedding.weight
        return lambda ids: F.embedding(ids, weight)
    return embedding


def norm_fn(norm: nn.Module, dtype: torch.dtype) -> Fn:
    """`norm` as a function of hidden states of `dtype`; a Llama RMSNorm runs as one `F.rms_norm` call.

    `LlamaRMSNorm` computes `weight * (h * rsqrt(mean(h^2) + eps)).to(dtype)` with `h = x.float()` in six
    ops; `F.rms_norm` gives the normalized `h` bit for bit in one call (in fp32 with the weight folded in),
    and the casts and the weight product around it stay those of the module.
    """
    if not bare(norm, LlamaRMSNorm):
        return norm
    weight, eps = norm.weight, norm.variance_epsilon
    if dtype == weight.dtype == torch.float32:
        return lambda x: F.rms_norm(x, weight.shape, weight, eps)
    return lambda x: weight * F.rms_norm(x.float(), weight.shape, None, eps).to(x.dtype)


def mlp_fn(mlp: nn.Module) -> Fn:
    """Llama's MLP, `down(silu(gate(x)) * up(x))`, as `LlamaMLP` computes it (another MLP: its own forward)."""
    if not bare(mlp, LlamaMLP) or mlp.config.hidden_act != "silu":
        return mlp
    gate, up, down = linear_fn(mlp.gate_proj), linear_fn(mlp.up_proj), linear_fn(mlp.down_proj)
    shared = shared_input_fn((mlp.gate_proj, mlp.up_proj))

    def llama_mlp(x: torch.Tensor) -> torch.Tensor:
        rows = shared(x)  # [N, D], or its int8 rows
        return down(F.silu(gate(rows)) * up(rows))  # [N, D]

    return llama_mlp


Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, bool], torch.Tensor]


def attention_fn(attn: nn.Module) -> Attention:
    """The layer's attention, `(query [B, H, Q, hd], keys, values [B, Hkv, K, hd], mask, causal) -> [B, Q, H, hd]`.

    `mask` is the model's additive mask `[B, 1, Q, K]` or None; without one, `causal` says whether query i
    sees keys 0..i only (Q = K) or every key. SDPA without grouped heads is called directly (what
    transformers' SDPA wrapper runs, minus its checks); other implementations go through transformers'
    attention interface, given an explicit mask whenever Q > 1 (eager attention has no causal flag).
    """
    implementation, scaling = attn.config._attn_implementation, attn.scaling
    if implementation == "sdpa" and attn.config.num_key_value_heads == attn.config.num_attention_heads:

        def sdpa(query, keys, values, mask, causal):
            causal = causal and mask is None
            out = F.scaled_dot_product_attention(query, keys, values, mask, is_causal=causal, scale=scaling)
            return out.transpose(1, 2)  # [B, Q, H, hd]

        return sdpa
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)

    def through_interface(query, keys, values, mask, causal):
        if mask is None and query.shape[2] > 1:
            mask = explicit_mask(query.shape[2], keys.shape[2], causal, query)  # [1, 1, Q, K]
        return interface(attn, query, keys, values, mask, dropout=0.0, scaling=scaling)[0]  # [B, Q, H, hd]

    return through_interface


def explicit_mask(n_queries: int, n_keys: int, causal: bool, like: torch.Tensor) -> torch.Tensor:
    """Additive mask `[1, 1, Q, K]` in the dtype of `like`: causal (Q = K) or all zeros (every key seen)."""
    mask = torch.zeros(n_queries, n_keys, dtype=like.dtype, device=like.device)  # [Q, K]
    if causal:
        mask = mask.masked_fill(torch.ones_like(mask, dtype=torch.bool).triu(1), torch.finfo(like.dtype).min)
    return mask[None, None]  # [1, 1, Q, K]


def block_causal_attention(
    attend: Attention, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block: int
) -> torch.Tensor:
    """Causal attention in which the last `block` positions also see each other (the action positions).

    Without padding this is the parallel heads' mask (`parallel_attention_mask`) as two unmasked calls:
    the prompt queries causal over the prompt, the block's queries over every key. `query` holds every
    position or only the block's. `[B, H, Q, hd] x [B, H, L, hd] -> [B, Q, H, hd]`.
    """
    n_queries, length = query.shape[2], keys.shape[2]
    if n_queries not in (length, block):
        raise ValueError(f"block-causal attention takes all {length} queries or the last {block}, not {n_queries}")
    actions = attend(query[:, :, -block:], keys, values, None, False)  # [B, block, H, hd]: every key
    if n_queries == block:
        return actions
    prefix = length - block
    prompt = attend(query[:, :, :prefix], keys[:, :, :prefix], values[:, :, :prefix], None, True)  # [B, S, H, hd]
    return torch.cat([prompt, actions], dim=1)  # [B, L, H, hd]


class LayerPlan(NamedTuple):
    """One Llama decoder layer resolved into functions once per call.

    Looking up a submodule or a weight through `nn.Module.__getattr__` costs ~1 µs, and a decode step did
    ~25 per layer; a plan looks them up once, so every token after the first runs on plain attributes.
    """

    input_norm: Fn  # RMSNorm before attention
    shared: Callable[[torch.Tensor], Rows]  # what q, k, v share of their input [N, D] (`shared_input_fn`)
    q: Fn  # q_proj, [N, D] -> [N, H*hd]
    k: Fn  # k_proj, [N, D] -> [N, Hkv*hd]
    v: Fn  # v_proj, [N, D] -> [N, Hkv*hd]
    o: Fn  # o_proj, [N, H*hd] -> [N, D]
    attend: Attention  # (query, keys, values, mask, causal) -> [B, Q, H, hd]
    post_norm: Fn  # RMSNorm before the MLP
    mlp: Fn  # [N, D] -> [N, D]
    head_dim: int  # hd
    layer_idx: int  # index of the layer's slot in the KV cache

    @classmethod
    def of(cls, layer: LlamaDecoderLayer, dtype: torch.dtype) -> LayerPlan:
        """The plan of `layer` for hidden states of `dtype`."""
        attn = layer.self_attn
        return cls(
            input_norm=norm_fn(layer.input_layernorm, dtype),
            shared=shared_input_fn((attn.q_proj, attn.k_proj, attn.v_proj)), q=linear_fn(attn.q_proj),
            k=linear_fn(attn.k_proj), v=linear_fn(attn.v_proj), o=linear_fn(attn.o_proj), attend=attention_fn(attn),
            post_norm=norm_fn(layer.post_attention_layernorm, dtype), mlp=mlp_fn(layer.mlp),
            head_dim=attn.head_dim, layer_idx=attn.layer_idx,
        )  # fmt: skip


class DecoderPlan(NamedTuple):
    """A Llama causal LM resolved once per call: its layers' plans, the embedding, final norm and head."""

    layers: tuple[LayerPlan, ...]
    embed: Fn  # token ids [B] -> [B, D]
    norm: Fn  # final RMSNorm
    lm_head: Fn  # [B, D] -> [B, V]

    @classmethod
    def of(cls, llm: nn.Module, dtype: torch.dtype) -> DecoderPlan:
        """The plan of `llm` (a `LlamaForCausalLM`) for hidden states of `dtype`."""
        decoder = llm.get_decoder()
        layers = tuple(LayerPlan.of(layer, dtype) for layer in decoder.layers)
        return cls(layers, embedding_fn(decoder.embed_tokens), norm_fn(decoder.norm, dtype), linear_fn(llm.lm_head))


def last_position_layer(
    layer: LayerPlan,
    hidden: torch.Tensor,
    rope: Rotary,
    cache: DynamicCache | None,
    mask: torch.Tensor | None,
    keep: int = 1,
    block: int = 0,
) -> torch.Tensor:
    """A decoder layer whose output is computed for the last `keep` positions only. `[B, L, D] -> [B, keep, D]`.

    Keys and values of all L positions are computed (and appended to `cache` when one is given: later tokens
    attend to them); the queries, the attention and the MLP run for the last `keep` positions alone. With
    keep = L this is bitwise `LlamaDecoderLayer` (a decode step is L = keep = 1); in a prefill it skips most
    of the last layer's work, as it does for the prompt positions of a parallel-decoding pass.

    Args:
        layer: the plan of one layer of the Llama decoder (`LayerPlan.of`).
        hidden: `[B, L, D]` input of the layer.
        rope: rotary tables `[B, 1, L, hd]` of the L positions (`Rotary.of(LlamaRotaryEmbedding(...))`).
        cache: the KV cache this layer's keys and values are appended to, or None (a single pass).
        mask: the kept queries' rows of the model's attention mask, `[B, 1, keep, L_cache + L]`, or None
            without padding: keep = 1 then sees every key, keep = L (an empty cache) is causal.
        keep: how many positions, counted from the end, the output covers.
        block: with mask None and no cache, the last `block` positions also attend to each other (the
            parallel heads' action positions, `block_causal_attention`); keep is then L or block.
    """
    (batch, length, width), head_dim = hidden.shape, layer.head_dim
    normed = layer.input_norm(hidden)  # [B, L, D]
    rows = layer.shared(normed.reshape(batch * length, width))  # [B*L, D] every position a row (or its int8 rows)
    keys = layer.k(rows).view(batch, length, -1, head_dim).transpose(1, 2)  # [B, Hkv, L, hd]
    values = layer.v(rows).view(batch, length, -1, head_dim).transpose(1, 2)  # [B, Hkv, L, hd]
    kept = rows if keep == length else last_rows(rows, batch, keep)  # [B*keep, D]
    query = layer.q(kept).view(batch, keep, -1, head_dim).transpose(1, 2)  # [B, H, keep, hd]
    if length == 1:  # a decode step: queries and keys of the one token rotated in one pass (4 ops, not 8)
        heads = query.shape[1]
        rotated = rope.rotate(torch.cat([query, keys], dim=1))  # [B, H + Hkv, 1, hd]
        query, keys = rotated[:, :heads], rotated[:, heads:]  # [B, H, 1, hd], [B, Hkv, 1, hd]
    else:
        query = (rope if keep == length else rope.at(length - keep, length)).rotate(query)  # [B, H, keep, hd]
        keys = rope.rotate(keys)  # [B, Hkv, L, hd]
    if cache is not None:
        keys, values = cache.update(keys, values, layer.layer_idx)  # [B, Hkv, L_cache + L, hd]
    if block and mask is None:
        out = block_causal_attention(layer.attend, query, keys, values, block)  # [B, keep, H, hd]
    else:  # no mask: the prompt of a prefill (keep = L) is causal, one query sees every key
        causal = True if keep == length > 1 else False  # noqa: SIM210 (a branch: a plain bool under torch.compile)
        out = layer.attend(query, keys, values, mask, causal)  # [B, keep, H, hd]
    out = out.reshape(batch * keep, -1)  # [B*keep, H*hd]
    residual = (hidden if keep == length else hidden[:, -keep:]).reshape(batch * keep, width)  # [B*keep, D]
    hidden = residual + layer.o(out)  # [B*keep, D]
    hidden = hidden + layer.mlp(layer.post_norm(hidden))  # [B*keep, D]
    return hidden.view(batch, keep, width)  # [B, keep, D]


def last_hidden_states(
    llm: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor, keep: int
) -> torch.Tensor:
    """The decoder's final (normed) hidden states of the last `keep` positions, in one pass without a cache.

    What `llm.model(...).last_hidden_state[:, -keep:]` gives, with the last layer computed for those
    positions only (`last_position_layer`). Inference of the parallel heads uses it: they read the K*A action
    positions at the end of the sequence. `[B, L, D] -> [B, keep, D]`.

    Args:
        llm: the causal LM (`LlamaForCausalLM`).
        embeds: `[B, L, D]` input embeddings.
        mask: `[B, 1, L, L]` additive attention mask (as the model's forward would be given), or None for
            the parallel heads' mask without padding: causal, and the last `keep` positions also attend to
            each other (`block_causal_attention`: two unmasked attention calls instead of a dense mask).
        positions: `[B, L]` position of every token.
        keep: number of positions at the end whose hidden states are returned.
    """
    plan = DecoderPlan.of(llm, embeds.dtype)
    rope = Rotary.of(llm.get_decoder().rotary_emb(embeds, positions))  # [B, 1, L, hd] tables
    hidden, length, block = embeds, embeds.shape[1], keep if mask is None else 0
    for layer in plan.layers[:-1]:
        hidden = last_position_layer(layer, hidden, rope, None, mask, keep=length, block=block)  # [B, L, D]
    last_rows = None if mask is None else mask[:, :, -keep:]  # [B, 1, keep, L]
    hidden = last_position_layer(plan.layers[-1], hidden, rope, None, last_rows, keep, block)  # [B, keep, D]
    return plan.norm(hidden)  # [B, keep, D]


def prefill(
    plan: DecoderPlan,
    embeds: torch.Tensor,
    causal: torch.Tensor | None,
    rope: Rotary,
    cache: DynamicCache,
) -> torch.Tensor:
    """Runs the whole sequence through the LLM, filling `cache`. Returns the last position's logits `[B, V]`.

    Args:
        plan: the LLM's plan (`DecoderPlan.of`).
        embeds: `[B, S, D]` left-aligned multimodal embeddings.
        causal: the model's attention mask `[B, 1, S, S]` (what `LlamaModel.forward` builds for padded rows),
            or None without padding (SDPA's causal mask).
        rope: the rotary tables of the S positions, `[B, 1, S, hd]`.
        cache: an empty KV cache.
    """
    hidden, length = embeds, embeds.shape[1]
    for layer in plan.layers[:-1]:
        hidden = last_position_layer(layer, hidden, rope, cache, causal, keep=length)  # [B, S, D]
    last_row = None if causal is None else causal[:, :, -1:]  # [B, 1, 1, S]
    hidden = last_position_layer(plan.layers[-1], hidden, rope, cache, last_row)  # [B, 1, D]
    return plan.lm_head(plan.norm(hidden[:, -1]))  # [B, V]


def decode_step(
    plan: DecoderPlan, ids: torch.Tensor, rope: Rotary, cache: DynamicCache, mask: torch.Tensor | None
) -> torch.Tensor:
    """One token through every layer, appending its keys and values to `cache`. `[B] -> [B, V]` logits.

    `rope` holds this token's rotary tables `[B, 1, 1, hd]`; `mask` is the model's attention mask `[B, 1, 1, S + t]`
    or None (no padding: the new token attends to every cached one).
    """
    hidden = plan.embed(ids)[:, None]  # [B, 1, D]
    for layer in plan.layers:
        hidden = last_position_layer(layer, hidden, rope, cache, mask)  # [B, 1, D]
    return plan.lm_head(plan.norm(hidden[:, -1]))  # [B, V]


def prefill_of_llm(
    llm: nn.Module, embeds: torch.Tensor, causal: torch.Tensor | None, rope: Rotary, cache: DynamicCache
) -> torch.Tensor:
    """`prefill` with the LLM's plan built inside, which is what `torch.compile` traces.

    A plan's functions are new objects on every call, and a compiled function taking them would guard on
    them and recompile; built inside the traced function, they are traced away.
    """
    return prefill(DecoderPlan.of(llm, embeds.dtype), embeds, causal, rope, cache)


def decode_step_of_llm(
    llm: nn.Module, dtype: torch.dtype, ids: torch.Tensor, rope: Rotary, cache: DynamicCache, mask: torch.Tensor | None
) -> torch.Tensor:
    """`decode_step` with the LLM's plan (for hidden states of `dtype`) built inside, for `torch.compile`."""
    return decode_step(DecoderPlan.of(llm, dtype), ids, rope, cache, mask)


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
    inputs = model.embed_inputs(input_ids, pixel_values, attention_mask, proprio=proprio)
    return greedy_decode(model.language_model, inputs.embeds, inputs.attention_mask, n_tokens, torch_compile)


@torch.inference_mode()
def greedy_decode(
    llm: nn.Module,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    n_tokens: int,
    torch_compile: bool = False,
) -> torch.Tensor:
    """Greedy ids of the next `n_tokens` tokens after multimodal embeddings, `[B, S, D] -> [B, n_tokens]`.

    What `llm.generate(inputs_embeds=embeds, attention_mask=attention_mask, max_new_tokens=n_tokens,
    do_sample=False)` returns, without stopping at EOS.

    Args:
        llm: the causal LM (`LlamaForCausalLM`).
        embeds: `[B, S, D]` right-padded multimodal embeddings (`OpenVLA.embed_inputs`).
        attention_mask: `[B, S]` (0 on padding) or None when no row is padded.
        n_tokens: number of tokens to decode.
        torch_compile: run prefill and decode steps through `torch.compile` (opt-in, see `compiled`).
    """
    decoder = llm.get_decoder()
    if not llama_layers(llm):
        raise TypeError(f"greedy decoding drives Llama decoder layers; this LLM has {type(decoder.layers[0])}")
    mask = attention_mask  # [B, S] | None
    if mask is not None and bool((mask == 0).any()):
        embeds, mask = left_align(embeds, mask)
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, S] each row counts from 0
    else:
        mask = None  # no padding: the causal mask alone is exact and cheaper
        positions = torch.arange(embeds.shape[1], device=embeds.device)[None]  # [1, S]
    if torch_compile:  # the compiled functions take the LLM and build its plan inside the traced code
        prefill_fn, step_fn = compiled(prefill_of_llm), compiled(decode_step_of_llm)
        run_prefill, run_step = functools.partial(prefill_fn, llm), functools.partial(step_fn, llm, embeds.dtype)
    else:
        plan = DecoderPlan.of(llm, embeds.dtype)
        run_prefill, run_step = functools.partial(prefill, plan), functools.partial(decode_step, plan)
    seq_len, cache = embeds.shape[1], DynamicCache()
    new_positions = positions[:, -1:] + torch.arange(1, n_tokens, device=embeds.device)  # [B, A - 1]
    all_positions = torch.cat([positions, new_positions], dim=1)  # [B, S + A - 1]
    rope = Rotary.of(decoder.rotary_emb(embeds, all_positions))  # [B, 1, S + A - 1, hd] tables, computed once
    # what LlamaModel.forward builds: None without padding (SDPA's is_causal), else [B, 1, S, S]
    causal = None if mask is None else create_causal_mask(decoder.config, embeds, mask, cache, position_ids=positions)
    next_ids = run_prefill(embeds, causal, rope.at(0, seq_len), cache).argmax(dim=-1)  # [B]
    generated = [next_ids]
    for step in range(n_tokens - 1):
        step_mask = None
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, S + step + 1]
            step_mask = create_causal_mask(  # reads only the shape and dtype of embeds[:, :1], [B, 1, D]
                decoder.config, embeds[:, :1], mask, cache, position_ids=new_positions[:, step : step + 1]
            )  # [B, 1, 1, S + step + 1]
        step_rope = rope.at(seq_len + step, seq_len + step + 1)  # [B, 1, 1, hd]
        next_ids = run_step(next_ids, step_rope, cache, step_mask).argmax(dim=-1)  # [B]
        generated.append(next_ids)
    return torch.stack(generated, dim=1)  # [B, n_tokens]
