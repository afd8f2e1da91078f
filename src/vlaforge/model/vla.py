"""OpenVLA: image + instruction -> action tokens -> robot action.

```
 image ──► processor ──► pixel_values [B, 6, 224, 224]        "put eggplant in bowl"
                               │                                       │ prompt + tokenizer
                 ┌─────────────┴─────────────┐                         ▼
                 ▼                           ▼                  input_ids [B, T]
        DINOv2 (block d-2)          SigLIP (block d-2)                 │
           [B, P, 1024]                [B, P, 1152]                    │ embed_tokens
                 └──────── concat ───────────┘                         ▼
                        [B, P, Dv]                              text embeds [B, T, D]
                            │ Projector (fc1 → GELU → fc2 → GELU → fc3)   │
                            ▼                                             │
                      patches [B, P, D] ─────► [BOS | patches | prompt ...] [B, S, D]
                                                         │ Llama 2 (causal)
                                                         ▼
                                       logits [B, S, V] ─► greedy A tokens ─► bins ─► unnormalize ─► action [A]
```

Dimension legend (used in every shape comment of vlaforge):
    B  batch                       P   patches per image (256 at 224 px, patch 14)
    Dv vision features (2176 = 1024 DINOv2 + 1152 SigLIP)        D   LLM width (4096)
    T  text tokens incl. BOS       S   multimodal sequence length = P + T
    V  LLM vocabulary rows (32064) A   action dimensions (7)     K   bins per dimension (256)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.actions.normalize import action_stats_for, unnormalize_actions
from vlaforge.actions.tokenizer import ActionTokenizer
from vlaforge.config import VLAConfig
from vlaforge.constants import IGNORE_INDEX
from vlaforge.model.llm import build_language_model
from vlaforge.model.projector import Projector
from vlaforge.model.vision import VisionBackbone

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedTokenizerBase

    from vlaforge.data.processor import VLAProcessor


@dataclass
class VLAOutput:
    """What `OpenVLA.forward` returns."""

    logits: torch.Tensor  # [B, S, V] over the whole multimodal sequence, patches included
    loss: torch.Tensor | None = None  # mean cross-entropy over the labelled (action + stop) tokens
    past_key_values: Any = None  # the LLM's KV cache when `use_cache=True`
    projector_features: torch.Tensor | None = None  # [B, P, D] projected patches


@dataclass
class MultimodalInputs:
    """The LLM's input after the patches are spliced in after BOS."""

    embeds: torch.Tensor  # [B, S, D]
    attention_mask: torch.Tensor | None  # [B, S] or None (no padding)
    labels: torch.Tensor | None  # [B, S] or None
    projector_features: torch.Tensor  # [B, P, D]


def build_multimodal_sequence(
    text_embeds: torch.Tensor,
    patch_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Inserts the patch embeddings right after BOS: `[BOS | patches | rest of the text]`.

    Patches are always attended (mask 1) and never labelled (IGNORE_INDEX), so the loss stays on actions.

    Args:
        text_embeds: `[B, T, D]` embedded `input_ids` (BOS first).
        patch_embeds: `[B, P, D]` projected patches.
        attention_mask: `[B, T]` text mask (right padding) or None.
        labels: `[B, T]` text labels or None.

    Returns:
        embeds `[B, S, D]`, attention mask `[B, S]` (or None) and labels `[B, S]` (or None).
    """
    batch, n_patches = patch_embeds.shape[:2]
    embeds = torch.cat([text_embeds[:, :1], patch_embeds, text_embeds[:, 1:]], dim=1)  # [B, S, D]
    mask = None
    if attention_mask is not None:
        patch_mask = attention_mask.new_ones(batch, n_patches)  # [B, P]
        mask = torch.cat([attention_mask[:, :1], patch_mask, attention_mask[:, 1:]], dim=1)  # [B, S]
    if labels is not None:
        patch_labels = labels.new_full((batch, n_patches), IGNORE_INDEX)  # [B, P]
        labels = torch.cat([labels[:, :1], patch_labels, labels[:, 1:]], dim=1)  # [B, S]
    return embeds, mask, labels


def action_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy, averaged over positions whose label is not IGNORE_INDEX.

    Position `s` predicts token `s + 1`. Only the action tokens and the stop token carry labels, so this
    is the loss "on actions only" of the paper.
    """
    shifted_logits = logits[:, :-1].float()  # [B, S-1, V]
    shifted_labels = labels[:, 1:]  # [B, S-1]
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),  # [B*(S-1), V]
        shifted_labels.reshape(-1),  # [B*(S-1)]
        ignore_index=IGNORE_INDEX,
    )


class OpenVLA(nn.Module):
    """The OpenVLA model: vision backbone, projector and language model, with the checkpoint's key names.

    Build a fresh model with `OpenVLA(config)`, load one with `OpenVLA.from_pretrained(dir)`.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config)
        self.language_model = build_language_model(config.text_config, config.attn_implementation)
        llm_dim = self.language_model.get_input_embeddings().embedding_dim
        self.projector = Projector(self.vision_backbone.embed_dim, llm_dim, config.use_fused_vision_backbone)
        self.action_tokenizer = ActionTokenizer(vocab_end=config.vocab_end, n_bins=config.n_action_bins)
        self.processor: VLAProcessor | None = None  # attached by from_pretrained when the dir has a tokenizer

    # ------------------------------------------------------------------------------------ checkpoints
    @classmethod
    def create(
        cls, config: VLAConfig, tokenizer: PreTrainedTokenizerBase | None = None, seed: int | None = None
    ) -> OpenVLA:
        """A freshly initialized model; with a tokenizer, its processor is attached (for predict_action).

        Args:
            config: the architecture (e.g. `get_preset("tiny")`).
            tokenizer: text tokenizer whose base vocabulary ends with the action tokens.
            seed: seed for the random initialization (None: torch's current RNG state).
        """
        from vlaforge.data.processor import VLAProcessor

        if seed is not None:
            torch.manual_seed(seed)
        model = cls(config)
        if tokenizer is not None:
            model.processor = VLAProcessor(tokenizer, config)
        return model.eval()

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> OpenVLA:
        """Loads a checkpoint directory in the released openvla-7b format (see `vlaforge.model.weights`)."""
        from vlaforge.model.weights import load_pretrained

        return load_pretrained(path, dtype=dtype, device=device)

    def save_pretrained(self, path: str | Path, max_shard_bytes: int = 5 * 2**30) -> None:
        """Writes config.json, safetensors weights, dataset_statistics.json and the tokenizer to `path`."""
        from vlaforge.model.weights import save_pretrained

        save_pretrained(self, path, max_shard_bytes=max_shard_bytes)

    @property
    def norm_stats(self) -> dict[str, Any] | None:
        """Per-dataset statistics (`dataset_statistics.json`), keyed by `unnorm_key`."""
        return self.config.norm_stats

    @property
    def device(self) -> torch.device:
        """Device of the LLM weights."""
        return self.language_model.get_input_embeddings().weight.device

    # ------------------------------------------------------------------------------------ forward
    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MultimodalInputs:
        """Images -> patches -> projector, text -> embeddings, spliced into one sequence."""
        if input_ids.ndim != 2 or pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"input_ids must be [B, T] with the batch size of pixel_values; got input_ids "
                f"{list(input_ids.shape)} and pixel_values {list(pixel_values.shape)}"
            )
        vision_dtype = self.projector.fc1.weight.dtype
        patch_features = self.vision_backbone(pixel_values.to(vision_dtype))  # [B, P, Dv]
        projected = self.projector(patch_features)  # [B, P, D]
        text_embeds = self.language_model.get_input_embeddings()(input_ids)  # [B, T, D]
        embeds, mask, labels = build_multimodal_sequence(
            text_embeds, projected.to(text_embeds.dtype), attention_mask, labels
        )
        return MultimodalInputs(embeds, mask, labels, projected)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> VLAOutput:
        """Logits over `[BOS | patches | text]` and, with `labels`, the action-token loss.

        Args:
            input_ids: `[B, T]` prompt (+ action + stop) token ids, BOS first, right padded.
            pixel_values: `[B, 3 * n_towers, H, W]` from the processor.
            attention_mask: `[B, T]`, 0 on padding; None means no padding.
            labels: `[B, T]` with IGNORE_INDEX everywhere but the action and stop tokens.
            use_cache: return the LLM's KV cache.
        """
        inputs = self.embed_inputs(input_ids, pixel_values, attention_mask, labels)
        out = self.language_model(
            inputs_embeds=inputs.embeds, attention_mask=inputs.attention_mask, use_cache=use_cache
        )
        loss = action_token_loss(out.logits, inputs.labels) if inputs.labels is not None else None
        return VLAOutput(out.logits, loss, out.cache if use_cache else None, inputs.projector_features)

    # ------------------------------------------------------------------------------------ inference
    @torch.inference_mode()
    def predict_action(
        self,
        images: Image | np.ndarray | list | None = None,
        instructions: str | list[str] | None = None,
        *,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        unnorm_key: str | None = None,
        processor: VLAProcessor | None = None,
    ) -> np.ndarray:
        """Greedy-decodes one action per sample and unnormalizes it with the statistics of `unnorm_key`.

        Either give `images` + `instructions` (one, or lists for a batch), or `input_ids` (as the processor
        builds them: ending with the action-prefix token) + `pixel_values`. Batches of any size work.

        Returns:
            float64 `[A]` for a single image/instruction (or `input_ids` of batch 1, as the original),
            `[B, A]` for a batch.
        """
        from vlaforge.infer.generate import greedy_generate

        stats = action_stats_for(self.norm_stats, unnorm_key)  # fail before any compute
        if input_ids is None:
            processor = processor or self.processor
            if processor is None:
                raise ValueError("predict_action(images, instructions) needs a processor; pass processor=...")
            squeeze = not isinstance(instructions, (list, tuple))
            batch = processor(images, instructions)
            input_ids, attention_mask, pixel_values = (
                batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
            )  # fmt: skip
        elif pixel_values is None:
            raise ValueError("predict_action(input_ids=...) also needs pixel_values")
        else:
            squeeze = input_ids.shape[0] == 1
        device = self.device
        ids = greedy_generate(
            self,
            input_ids.to(device),
            pixel_values.to(device),
            None if attention_mask is None else attention_mask.to(device),
            n_tokens=stats.dim,
        )  # [B, A]
        normalized = self.action_tokenizer.decode(ids.cpu().numpy())  # [B, A]
        actions = unnormalize_actions(normalized, stats)  # [B, A]
        return actions[0] if squeeze else actions
