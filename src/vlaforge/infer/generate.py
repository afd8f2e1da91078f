"""Greedy decoding of action tokens with a KV cache, for any batch size.

OpenVLA decodes its A action tokens with Hugging Face `generate` and refuses batches. Here the loop is
written out: one prefill pass over `[BOS | patches | prompt]`, then A - 1 single-token passes that reuse the
KV cache. Batches with prompts of different lengths are left-aligned first (padding moved to the front,
positions counted from each row's first real token), so every row sees exactly what it would see alone.

Deviation from the original (documented in docs/design.md): decoding always produces A tokens; HF
`generate` would stop early at EOS and then read prompt tokens as actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import DynamicCache

if TYPE_CHECKING:
    from vlaforge.model.vla import OpenVLA


def left_align(embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moves each row's right padding to the front. `[B, S, D], [B, S] -> [B, S, D], [B, S]`."""
    seq_len = mask.shape[1]
    shift = seq_len - mask.sum(dim=1)  # [B] padding per row
    positions = torch.arange(seq_len, device=mask.device)  # [S]
    source = (positions[None, :] - shift[:, None]) % seq_len  # [B, S] where each new slot reads from
    aligned = embeds.gather(1, source[..., None].expand(-1, -1, embeds.shape[-1]))  # [B, S, D]
    return aligned, mask.gather(1, source)


@torch.inference_mode()
def greedy_generate(
    model: OpenVLA,
    input_ids: torch.Tensor,
    pixel_values: torch.Tensor,
    attention_mask: torch.Tensor | None,
    n_tokens: int,
    proprio: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy ids of the next `n_tokens` tokens for every row. Returns `[B, n_tokens]`.

    Args:
        model: the VLA.
        input_ids: `[B, T]` right-padded prompts (ending with the action-prefix token).
        pixel_values: `[B, C, H, W]`.
        attention_mask: `[B, T]` (0 on padding) or None when no row is padded.
        n_tokens: number of tokens to decode (the action dimension).
        proprio: `[B, Dp]` normalized robot state, for models with a proprio token.
    """
    inputs = model.embed_inputs(input_ids, pixel_values, attention_mask, proprio=proprio)
    embeds, mask = inputs.embeds, inputs.attention_mask  # [B, S, D], [B, S] | None
    positions = None
    if mask is not None and bool((mask == 0).any()):
        embeds, mask = left_align(embeds, mask)
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, S] each row counts from 0
    else:
        mask = None  # no padding: the causal mask alone is exact and cheaper
    llm, embed_tokens = model.language_model, model.language_model.get_input_embeddings()
    cache = DynamicCache()
    out = llm(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
        cache=cache, use_cache=True, logits_to_keep=1,
    )  # fmt: skip
    next_ids = out.logits[:, -1].argmax(dim=-1)  # [B]
    generated = [next_ids]
    for _ in range(n_tokens - 1):
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B, S + t]
            positions = positions[:, -1:] + 1  # [B, 1]
        out = llm(
            inputs_embeds=embed_tokens(next_ids)[:, None],  # [B, 1, D]
            attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
        )  # fmt: skip
        next_ids = out.logits[:, -1].argmax(dim=-1)  # [B]
        generated.append(next_ids)
    return torch.stack(generated, dim=1)  # [B, n_tokens]
