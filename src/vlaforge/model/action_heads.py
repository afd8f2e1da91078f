"""Parallel decoding: every action position of a chunk predicted in one forward pass (OpenVLA-OFT).

The original decodes A tokens one at a time. With a parallel head the sequence ends with K * A action
positions whose input embeddings are zero; they attend to the whole prompt (causally, as the prompt does)
and to each other in both directions. Their outputs are read in one pass:

- "parallel-tokens": the LM head's logits at each position, argmax over the 256 action tokens (the
  original's discrete bins, K times faster per action);
- "l1": a small MLP on the hidden states of each chunk step's A positions regresses the A normalized
  actions directly, trained with an L1 loss (OFT's best recipe).

Sequence (parallel):  [pad.. | BOS | patches | proprio? | prompt | a(1,1) .. a(K,A)]   (left aligned)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.actions.tokenizer import ActionTokenizer


def parallel_attention_mask(valid: torch.Tensor, n_action: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask: causal over the prompt, bidirectional over the last `n_action` positions.

    Args:
        valid: `[B, S]` bool, False on padding (keys that nobody may attend to).
        n_action: number of action positions at the end of the sequence.
        dtype: dtype of the mask (the LLM's compute dtype).

    Returns:
        `[B, 1, S, S]` with 0 where attention is allowed and the dtype's minimum elsewhere.
    """
    seq_len = valid.shape[1]
    index = torch.arange(seq_len, device=valid.device)  # [S]
    causal = index[None, :] <= index[:, None]  # [S, S] query row, key column
    is_action = index >= seq_len - n_action  # [S]
    action_block = is_action[:, None] & is_action[None, :]  # [S, S]
    allowed = (causal | action_block)[None] & valid[:, None, :]  # [B, S, S]
    allowed = allowed | torch.eye(seq_len, dtype=torch.bool, device=valid.device)[None]  # no empty rows (NaN)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)  # [B, S, S]
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]  # [B, 1, S, S]


def chunk_weights(chunk_mask: torch.Tensor | None, batch: int, chunk: int, device: torch.device) -> torch.Tensor:
    """`[B, K]` float weights of the chunk steps that exist (steps past an episode's end are 0)."""
    if chunk_mask is None:
        return torch.ones(batch, chunk, device=device)
    return chunk_mask.to(device=device, dtype=torch.float32)


class L1ActionHead(nn.Module):
    """Hidden states of one chunk step's A positions -> A continuous actions. `[B, K, A, D] -> [B, K, A]`."""

    def __init__(self, llm_dim: int, action_dim: int, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = hidden_dim or llm_dim
        self.norm = nn.LayerNorm(action_dim * llm_dim)
        self.fc1 = nn.Linear(action_dim * llm_dim, hidden_dim)
        self.block_norm = nn.LayerNorm(hidden_dim)
        self.block_fc = nn.Linear(hidden_dim, hidden_dim)
        self.fc_out = nn.Linear(hidden_dim, action_dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """One residual MLP block, as OFT's MLP-ResNet, at a fraction of its width."""
        x = self.fc1(self.norm(hidden.flatten(2)))  # [B, K, H]
        x = x + self.block_fc(F.gelu(self.block_norm(x)))  # [B, K, H]
        return self.fc_out(F.gelu(x))  # [B, K, A]


def parallel_token_loss(
    logits: torch.Tensor, target_ids: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy at the action positions, averaged over existing chunk steps.

    Args:
        logits: `[B, K, A, V]`.
        target_ids: `[B, K, A]` action token ids.
        weights: `[B, K]`, 0 for chunk steps past the episode's end.

    Returns:
        The loss and the per-position losses `[B, K, A]`.
    """
    per_position = F.cross_entropy(logits.flatten(0, 2).float(), target_ids.flatten(), reduction="none")  # [B*K*A]
    per_position = per_position.view(target_ids.shape)  # [B, K, A]
    step_weights = weights[..., None].expand_as(per_position)  # [B, K, A]
    return (per_position * step_weights).sum() / step_weights.sum().clamp(min=1), per_position


def argmax_action_ids(logits: torch.Tensor, tokenizer: ActionTokenizer) -> torch.Tensor:
    """Argmax restricted to the action-token rows (a parallel position must emit an action). `[..., V] -> [...]`."""
    action_logits = logits[..., tokenizer.first_id : tokenizer.vocab_end]  # [..., K_bins]
    return action_logits.argmax(dim=-1) + tokenizer.first_id
