"""The policy adapter: the only part of the server that knows the model.

`BatchPolicy` checks requests against the model (cameras, state, statistics key, prompt length) before they
are batched, runs a batch as few `predict_action` calls as there are statistics keys in it, and describes the
model for /metadata. Whatever the model learns to take next (history frames, ...) changes this class only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlaforge.actions.normalize import action_stats_for, select_unnorm_key
from vlaforge.infer.quant_modes import QuantMode, check_mode
from vlaforge.serve.protocol import PRIMARY_CAMERA, ProtocolError, Request

if TYPE_CHECKING:
    import torch

    from vlaforge.model.vla import OpenVLA


class BatchPolicy:
    """Wraps an `OpenVLA` for serving: `check` one request, `infer` a batch of them.

    Reads what the model takes from its config: the number of cameras (`num_images`; named "primary",
    "camera1", ...), the action chunk K (`action_chunk`) and the proprio size (`proprio_dim`).

    Args:
        model: a model with its processor (tokenizer) attached and normalization statistics.
        name: the model name /metadata reports (e.g. the checkpoint directory's name).
        quant: the quantization mode the model was loaded with (`from_pretrained` sets it); /metadata reports it.
    """

    def __init__(self, model: OpenVLA, name: str = "openvla", quant: QuantMode = "fp32") -> None:
        if model.processor is None:
            raise ValueError("the model has no tokenizer attached; serve a checkpoint saved with its tokenizer files")
        if not model.norm_stats:
            raise ValueError("the model has no normalization statistics (dataset_statistics.json); cannot serve")
        config = model.config
        if getattr(config, "history", 1) > 1:
            raise ValueError(
                f"the model takes {config.history} frames per camera (history); the server keeps no frame "
                "history yet, so serve a model with history=1"
            )
        self.model = model
        self.name = name
        self.quant = check_mode(quant)
        n_cameras = getattr(config, "num_images", 1)
        self.cameras = (PRIMARY_CAMERA, *(f"camera{i}" for i in range(1, n_cameras)))  # primary first
        self.chunk_size: int = getattr(config, "action_chunk", 1)  # K actions per prediction
        self.state_dim: int = getattr(config, "proprio_dim", 0)  # 0: the model takes no robot state
        # Fail at startup, not at the first request, if a key's statistics are malformed.
        self.stats = {key: action_stats_for(model.norm_stats, key) for key in sorted(model.norm_stats)}

    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu", quant: QuantMode = "fp32"
    ) -> BatchPolicy:
        """Loads a checkpoint directory and names the policy after it.

        Args:
            path: checkpoint directory (config.json + safetensors + tokenizer files).
            dtype: weight dtype (None: as saved); with a quantized mode, the dtype of the layers left float.
            device: torch device of the model.
            quant: "fp32" (as saved, the default), "bf16", "int8", "bnb-int8" or "nf4" (`load_for_inference`).
        """
        from vlaforge.infer.quantize import load_for_inference

        model = load_for_inference(path, quant, dtype=dtype, device=device)
        return cls(model, name=Path(path).resolve().name, quant=quant)

    @property
    def action_masks(self) -> dict[str, np.ndarray]:
        """Per statistics key, the `[A]` mask of normalized dims (False: passed raw, e.g. the gripper)."""
        return {key: stats.mask for key, stats in self.stats.items()}

    def check(self, request: Request) -> None:
        """Raises ProtocolError (422) if this model cannot answer `request`; resolves its statistics key."""
        unknown = [name for name in request.images if name not in self.cameras]
        missing = [name for name in self.cameras if name not in request.images]
        if unknown or missing:
            raise ProtocolError(
                422, f"this model takes the cameras {list(self.cameras)} (primary as 'image', the others in "
                f"'images'); unknown: {unknown}, missing: {missing}", "images",
            )  # fmt: skip
        if self.state_dim and (request.state is None or request.state.shape != (self.state_dim,)):
            got = "none" if request.state is None else f"{request.state.shape[0]} values"
            raise ProtocolError(422, f"this model needs 'state' with {self.state_dim} values, got {got}", "state")
        try:
            request.resolved_key = select_unnorm_key(self.model.norm_stats, request.unnorm_key)
        except ValueError as err:  # NormalizationError: the message lists the available keys
            raise ProtocolError(422, str(err), "unnorm_key") from err
        try:
            self.model.processor.prompts.prompt_ids(request.instruction)  # raises if the prompt is too long
        except ValueError as err:
            raise ProtocolError(422, str(err), "instruction") from err

    def infer(self, requests: list[Request]) -> list[np.ndarray]:
        """Actions for checked requests, in order: each `[A]` (or `[K, A]`) float64 in robot units.

        Requests are grouped by statistics key; each group is one batched `predict_action` call.
        """
        out: list[np.ndarray | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = request.resolved_key or select_unnorm_key(self.model.norm_stats, request.unnorm_key)
            groups.setdefault(key, []).append(index)
        for key, indices in groups.items():
            group = [requests[i] for i in indices]
            if len(self.cameras) == 1:
                images: list = [r.image for r in group]
            else:
                images = [[r.images[name] for name in self.cameras] for r in group]
            extra = {"proprio": np.stack([r.state for r in group])} if self.state_dim else {}
            actions = self.model.predict_action(images, [r.instruction for r in group], unnorm_key=key, **extra)
            for row, index in enumerate(indices):
                out[index] = actions[row]  # [A] or [K, A]
        return out  # type: ignore[return-value]  # every slot was filled above

    def metadata(self) -> dict[str, Any]:
        """What a client needs to know to talk to this model."""
        config = self.model.config
        dims = {key: stats.dim for key, stats in self.stats.items()}
        size = config.image_sizes[0]
        return {
            "model_name": self.name,
            "quant": self.quant,
            "vision_backbone": config.vision_backbone_id,
            "llm_backbone": config.llm_backbone_id,
            "action_dim": next(iter(dims.values())) if len(set(dims.values())) == 1 else None,
            "action_dims": dims,
            "chunk_size": self.chunk_size,
            "cameras": list(self.cameras),
            "image_size": [size, size],
            "state_dim": self.state_dim,
            "norm_stats_keys": sorted(dims),
            "default_unnorm_key": next(iter(dims)) if len(dims) == 1 else None,
            "max_prompt_tokens": config.llm_max_length,
        }
