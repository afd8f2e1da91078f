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

Beyond the original (all optional, see VLAConfig): several images per sample (cameras x history, N images,
each P patches), a proprio token after the patches, and parallel heads that read a chunk of K actions from
K * A extra positions in one pass (`vlaforge.model.action_heads`).

Dimension legend (used in every shape comment of vlaforge):
    B  batch                       P   patches per image (256 at 224 px, patch 14)
    Dv vision features (2176 = 1024 DINOv2 + 1152 SigLIP)        D   LLM width (4096)
    T  text tokens incl. BOS       S   multimodal sequence length = P + T
    V  LLM vocabulary rows (32064) A   action dimensions (7)     K   action chunk (1 in the original)
    N  images per sample (1)       Dp  proprio dimensions
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.actions.normalize import (
    ActionStats,
    NormalizationError,
    action_stats_for,
    normalize_actions,
    select_unnorm_key,
    unnormalize_actions,
)
from vlaforge.actions.tokenizer import ActionTokenizer
from vlaforge.config import VLAConfig
from vlaforge.constants import IGNORE_INDEX
from vlaforge.model.action_heads import (
    L1ActionHead,
    argmax_action_ids,
    chunk_weights,
    parallel_attention_mask,
    parallel_token_loss,
)
from vlaforge.model.llm import build_language_model
from vlaforge.model.projector import Projector, ProprioProjector
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
    projector_features: torch.Tensor | None = None  # [B, N*P, D] projected patches
    actions: torch.Tensor | None = None  # parallel heads: [B, K, A] predicted normalized actions
    metrics: dict[str, float] = field(default_factory=dict)  # with labels: action accuracy and L1, for logging


@dataclass
class MultimodalInputs:
    """The LLM's input after the patches are spliced in after BOS."""

    embeds: torch.Tensor  # [B, S, D]
    attention_mask: torch.Tensor | None  # [B, S] or None (no padding)
    labels: torch.Tensor | None  # [B, S] or None
    projector_features: torch.Tensor  # [B, N*P, D]


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
        patch_embeds: `[B, P, D]` projected patches of every image (and the proprio token, when used).
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


@torch.no_grad()
def action_token_metrics(logits: torch.Tensor, labels: torch.Tensor, tokenizer: ActionTokenizer) -> dict[str, float]:
    """The original's training metrics: action-token accuracy and L1 of the decoded actions.

    Accuracy of the argmax over action positions, L1 in normalized units; EOS and ignored positions excluded.
    """
    predictions = logits[:, :-1].argmax(dim=-1)  # [B, S-1]
    targets = labels[:, 1:]  # [B, S-1]
    mask = (targets > tokenizer.begin_idx) & (targets < tokenizer.vocab_end)  # action positions only
    if not bool(mask.any()):
        return {}
    accuracy = ((predictions == targets) & mask).sum() / mask.sum()
    predicted = tokenizer.decode(predictions[mask].cpu().numpy())
    target = tokenizer.decode(targets[mask].cpu().numpy())
    return {"action_accuracy": float(accuracy), "l1": float(abs(predicted - target).mean())}


class OpenVLA(nn.Module):
    """The OpenVLA model: vision backbone, projector and language model, with the checkpoint's key names.

    Build a fresh model with `OpenVLA(config)` / `OpenVLA.create(...)`, load one with `OpenVLA.from_pretrained(dir)`.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_backbone = VisionBackbone(config)
        self.language_model = build_language_model(config.text_config, config.attn_implementation)
        llm_dim = self.language_model.get_input_embeddings().embedding_dim
        self.projector = Projector(self.vision_backbone.embed_dim, llm_dim, config.use_fused_vision_backbone)
        if config.proprio_dim:
            self.proprio_projector = ProprioProjector(config.proprio_dim, llm_dim)
        if config.action_head == "l1":
            self.action_head = L1ActionHead(llm_dim, config.action_dim)
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

    # ------------------------------------------------------------------------------------ inputs
    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch features and projected patches of all images of each sample, concatenated in order.

        Args:
            pixel_values: `[B, C, H, W]` (one image) or `[B, N, C, H, W]` (see `VLAConfig.images_per_sample`).

        Returns:
            `[B, N*P, Dv]` features and `[B, N*P, D]` projected patches.
        """
        n_images = self.config.images_per_sample
        if pixel_values.ndim == 4 and n_images == 1:
            pixel_values = pixel_values[:, None]  # [B, 1, C, H, W]
        if pixel_values.ndim != 5 or pixel_values.shape[1] != n_images:
            raise ValueError(
                f"the model takes {n_images} image(s) per sample (num_images={self.config.num_images} cameras, "
                f"history={self.config.history} frames) as pixel_values [B, {n_images}, C, H, W]; got "
                f"{list(pixel_values.shape)}. Pass one image per camera and frame through the processor."
            )
        batch = pixel_values.shape[0]
        flat = pixel_values.flatten(0, 1).to(self.projector.fc1.weight.dtype)  # [B*N, C, H, W]
        features = self.vision_backbone(flat)  # [B*N, P, Dv]
        features = features.reshape(batch, -1, features.shape[-1])  # [B, N*P, Dv]
        return features, self.projector(features)  # [B, N*P, Dv], [B, N*P, D]

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
    ) -> MultimodalInputs:
        """Images -> patches -> projector (+ proprio token), text -> embeddings, spliced after BOS."""
        if input_ids.ndim != 2 or pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"input_ids must be [B, T] with the batch size of pixel_values; got input_ids "
                f"{list(input_ids.shape)} and pixel_values {list(pixel_values.shape)}"
            )
        _, projected = self.encode_images(pixel_values)  # [B, N*P, D]
        text_embeds = self.language_model.get_input_embeddings()(input_ids)  # [B, T, D]
        prefix = projected.to(text_embeds.dtype)  # [B, N*P, D]
        if self.config.proprio_dim:
            if proprio is None or proprio.shape != (input_ids.shape[0], self.config.proprio_dim):
                got = None if proprio is None else list(proprio.shape)
                raise ValueError(f"this model needs proprio [B, {self.config.proprio_dim}] (normalized); got {got}")
            state_token = self.proprio_projector(proprio.to(self.projector.fc1.weight.dtype))  # [B, 1, D]
            prefix = torch.cat([prefix, state_token.to(text_embeds.dtype)], dim=1)  # [B, N*P + 1, D]
        elif proprio is not None:
            raise ValueError("this model was built without a proprio input (proprio_dim=0); do not pass proprio")
        embeds, mask, labels = build_multimodal_sequence(text_embeds, prefix, attention_mask, labels)
        return MultimodalInputs(embeds, mask, labels, projected)

    def append_action_positions(
        self, inputs: MultimodalInputs, dense_mask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Parallel heads: left-align the prompts and append K*A zero embeddings as action positions.

        Returns:
            embeds `[B, S + K*A, D]`, additive attention mask `[B, 1, S + K*A, S + K*A]` (None when
            `dense_mask` is False and no prompt is padded: the inference pass then attends block-causally
            without one), positions `[B, S + K*A]`.
        """
        from vlaforge.infer.generate import left_align

        embeds, mask = inputs.embeds, inputs.attention_mask  # [B, S, D], [B, S] | None
        batch, seq_len, width = embeds.shape
        if mask is None:
            mask = torch.ones(batch, seq_len, dtype=torch.long, device=embeds.device)  # [B, S]
        embeds, mask = left_align(embeds, mask)
        n_action = self.config.action_chunk * self.config.action_dim
        placeholders = embeds.new_zeros(batch, n_action, width)  # [B, K*A, D]: OFT's empty action embeddings
        embeds = torch.cat([embeds, placeholders], dim=1)  # [B, S + K*A, D]
        valid = torch.cat([mask.bool(), mask.new_ones(batch, n_action).bool()], dim=1)  # [B, S + K*A]
        positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, S + K*A]
        if not dense_mask and bool(valid.all()):
            return embeds, None, positions
        return embeds, parallel_attention_mask(valid, n_action, embeds.dtype), positions

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        proprio: torch.Tensor | None = None,
        action_chunk: torch.Tensor | None = None,
        action_chunk_mask: torch.Tensor | None = None,
        use_cache: bool = False,
    ) -> VLAOutput:
        """Logits (token heads) or actions (L1 head) and, with targets, the loss on actions only.

        Args:
            input_ids: `[B, T]` token ids, BOS first, right padded. Token head: prompt + action + stop
                tokens; parallel heads: the prompt only (targets come from `action_chunk`).
            pixel_values: `[B, C, H, W]` or `[B, N, C, H, W]` from the processor.
            attention_mask: `[B, T]`, 0 on padding; None means no padding.
            labels: token head: `[B, T]` with IGNORE_INDEX everywhere but the action and stop tokens.
            proprio: `[B, Dp]` normalized robot state (models with `proprio_dim > 0`).
            action_chunk: parallel heads: `[B, K, A]` normalized target actions.
            action_chunk_mask: `[B, K]`, False for chunk steps past the end of the episode.
            use_cache: token head: return the LLM's KV cache.
        """
        inputs = self.embed_inputs(input_ids, pixel_values, attention_mask, labels, proprio)
        if self.config.parallel_decoding:
            if labels is not None:
                raise ValueError(
                    f"action_head={self.config.action_head!r} trains from action_chunk, not token labels; build "
                    "samples with prompt-only input_ids (action tokens in the prompt would leak the answer)"
                )
            return self._forward_parallel(inputs, action_chunk, action_chunk_mask)
        out = self.language_model(
            inputs_embeds=inputs.embeds, attention_mask=inputs.attention_mask, use_cache=use_cache
        )
        loss, metrics = None, {}
        if inputs.labels is not None:
            loss = action_token_loss(out.logits, inputs.labels)
            metrics = action_token_metrics(out.logits, inputs.labels, self.action_tokenizer)
        cache = out.cache if use_cache else None
        return VLAOutput(out.logits, loss, cache, inputs.projector_features, metrics=metrics)

    def _forward_parallel(
        self, inputs: MultimodalInputs, action_chunk: torch.Tensor | None, chunk_mask: torch.Tensor | None
    ) -> VLAOutput:
        """One pass over `[prompt | K*A action positions]`; heads read the action positions' hidden states."""
        from vlaforge.infer.generate import last_hidden_states, llama_layers

        chunk, dim = self.config.action_chunk, self.config.action_dim
        trimmed = not torch.is_grad_enabled() and llama_layers(self.language_model)
        embeds, mask, positions = self.append_action_positions(inputs, dense_mask=not trimmed)
        if not trimmed:
            hidden = self.language_model.model(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions
            ).last_hidden_state[:, -chunk * dim :]  # [B, K*A, D]
        else:  # inference: the same numbers, the last layer computed for the action positions only
            hidden = last_hidden_states(self.language_model, embeds, mask, positions, chunk * dim)  # [B, K*A, D]
        action_hidden = hidden.unflatten(1, (chunk, dim))  # [B, K, A, D]
        batch = action_hidden.shape[0]
        if action_chunk is not None and tuple(action_chunk.shape[1:]) != (chunk, dim):
            raise ValueError(f"action_chunk must be [B, {chunk}, {dim}] for this model, got {list(action_chunk.shape)}")
        weights = chunk_weights(chunk_mask, batch, chunk, hidden.device)  # [B, K]
        if self.config.action_head == "l1":
            actions = self.action_head(action_hidden).float()  # [B, K, A]
            return self._l1_output(actions, action_chunk, weights, inputs)
        logits = self.language_model.lm_head(action_hidden)  # [B, K, A, V]
        ids = argmax_action_ids(logits, self.action_tokenizer)  # [B, K, A]
        actions = torch.from_numpy(self.action_tokenizer.decode(ids.cpu().numpy())).to(hidden.device)  # [B, K, A]
        loss, metrics = None, {}
        if action_chunk is not None:
            targets = torch.from_numpy(self.action_tokenizer.encode(action_chunk.detach().cpu().numpy()))
            loss, _ = parallel_token_loss(logits, targets.to(hidden.device), weights)
            hit = (ids == targets.to(hidden.device)).float() * weights[..., None]
            metrics = {
                "action_accuracy": float(hit.sum() / (weights.sum() * dim).clamp(min=1)),
                "l1": float(((actions - action_chunk).abs() * weights[..., None]).sum() / (weights.sum() * dim)),
            }
        return VLAOutput(logits, loss, None, inputs.projector_features, actions.float(), metrics)

    @staticmethod
    def _l1_output(
        actions: torch.Tensor, targets: torch.Tensor | None, weights: torch.Tensor, inputs: MultimodalInputs
    ) -> VLAOutput:
        """L1 head output: the mean absolute error over existing chunk steps is both loss and metric."""
        loss, metrics = None, {}
        if targets is not None:
            error = (actions - targets.float()).abs() * weights[..., None]  # [B, K, A]
            loss = error.sum() / (weights.sum() * actions.shape[-1]).clamp(min=1)
            metrics = {"l1": float(loss.detach())}
        return VLAOutput(actions, loss, None, inputs.projector_features, actions, metrics)

    # ------------------------------------------------------------------------------------ inference
    def proprio_tensor(self, proprio: np.ndarray | None, unnorm_key: str | None, batch: int) -> torch.Tensor | None:
        """Raw robot state `[B, Dp]` (or `[Dp]`) -> normalized tensor, with the dataset's "proprio" statistics."""
        if not self.config.proprio_dim:
            if proprio is not None:
                raise ValueError("this model takes no proprio input (proprio_dim=0); drop the state")
            return None
        if proprio is None:
            raise ValueError(f"this model needs the robot state: pass proprio=[{self.config.proprio_dim} values]")
        key = select_unnorm_key(self.norm_stats, unnorm_key)
        if "proprio" not in self.norm_stats[key]:
            raise NormalizationError(f"statistics of dataset {key!r} have no 'proprio' entry to normalize the state")
        stats = ActionStats.from_dict(self.norm_stats[key]["proprio"], dataset=key, feature="proprio")
        state = np.asarray(proprio, dtype=np.float64).reshape(batch, -1)  # [B, Dp]
        return torch.from_numpy(normalize_actions(state, stats)).float()

    @torch.inference_mode()
    def predict_action(
        self,
        images: Image | np.ndarray | list | None = None,
        instructions: str | list[str] | None = None,
        *,
        proprio: np.ndarray | None = None,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        unnorm_key: str | None = None,
        processor: VLAProcessor | None = None,
    ) -> np.ndarray:
        """Predicts one action (or a chunk) per sample and unnormalizes it with the statistics of `unnorm_key`.

        Either give `images` + `instructions` (one, or lists for a batch; with several cameras/frames each
        sample's images are a list), or `input_ids` (as the processor builds them: ending with the
        action-prefix token) + `pixel_values`. Batches of any size work.

        Returns:
            float64 `[A]` for a single sample (or `input_ids` of batch 1, as the original), `[B, A]` for a
            batch; chunked models (`action_chunk` K > 1) return `[K, A]` / `[B, K, A]`.
        """
        stats = action_stats_for(self.norm_stats, unnorm_key)  # fail before any compute
        if self.config.parallel_decoding and stats.dim != self.config.action_dim:
            raise NormalizationError(
                f"the model predicts {self.config.action_dim}-D actions but the statistics of "
                f"{stats.dataset!r} have {stats.dim} dimensions"
            )
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
        state = self.proprio_tensor(proprio, unnorm_key, input_ids.shape[0])
        normalized = self._predict_normalized(input_ids, pixel_values, attention_mask, state, stats.dim)
        actions = unnormalize_actions(normalized, stats)  # [B, A] or [B, K, A]
        return actions[0] if squeeze else actions

    def _predict_normalized(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None,
        proprio: torch.Tensor | None,
        action_dim: int,
    ) -> np.ndarray:
        """Normalized actions: `[B, A]` (token head, K = 1) or `[B, K, A]` (parallel heads, K > 1)."""
        from vlaforge.infer.generate import greedy_generate

        device = self.device
        to_device = lambda t: None if t is None else t.to(device)  # noqa: E731
        if not self.config.parallel_decoding:
            ids = greedy_generate(
                self, input_ids.to(device), pixel_values.to(device), to_device(attention_mask),
                n_tokens=action_dim, proprio=to_device(proprio),
            )  # fmt: skip
            return self.action_tokenizer.decode(ids.cpu().numpy())  # [B, A]
        out = self(input_ids.to(device), pixel_values.to(device), to_device(attention_mask), proprio=to_device(proprio))
        actions = out.actions.double().cpu().numpy()  # [B, K, A]
        return actions[:, 0] if self.config.action_chunk == 1 else actions
