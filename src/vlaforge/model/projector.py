"""Projector: an MLP from vision features into the LLM's embedding space.

Box 2 of the paper's figure. Fused towers get 3 layers (fc1 widens 4x, fc2 narrows to the LLM width,
fc3 keeps it); a single tower gets 2. Exact (erf) GELU, biases on every layer, as the original.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """`[B, P, Dv] -> [B, P, D]`. Attribute names (`fc1`, `fc2`, `fc3`) are the checkpoint's key names."""

    def __init__(self, vision_dim: int, llm_dim: int, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            hidden = 4 * vision_dim  # 8704 for openvla-7b
            self.fc1, self.act_fn1 = nn.Linear(vision_dim, hidden), nn.GELU()
            self.fc2, self.act_fn2 = nn.Linear(hidden, llm_dim), nn.GELU()
            self.fc3 = nn.Linear(llm_dim, llm_dim)
        else:
            self.fc1, self.act_fn1 = nn.Linear(vision_dim, llm_dim), nn.GELU()
            self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, patch_features: torch.Tensor) -> torch.Tensor:
        """Projects every patch independently."""
        x = self.act_fn1(self.fc1(patch_features))  # [B, P, 4 Dv] or [B, P, D]
        x = self.fc2(x)  # [B, P, D]
        if self.fused:
            x = self.fc3(self.act_fn2(x))  # [B, P, D]
        return x


class ProprioProjector(nn.Module):
    """Robot state -> one LLM token (OpenVLA-OFT's proprio projector). `[B, Dp] -> [B, 1, D]`."""

    def __init__(self, proprio_dim: int, llm_dim: int) -> None:
        super().__init__()
        self.fc1, self.act_fn1 = nn.Linear(proprio_dim, llm_dim), nn.GELU()
        self.fc2 = nn.Linear(llm_dim, llm_dim)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        """Projects the (normalized) state into a single token."""
        return self.fc2(self.act_fn1(self.fc1(proprio)))[:, None, :]  # [B, 1, D]
