"""Vision backbone: DINOv2 and SigLIP patch features, fused on the channel axis.

Box 1 of the paper's figure. Each tower is a timm ViT built by its real name (`pretrained=False`, so
nothing is downloaded); the features are the output of block `depth - 2` with the prefix tokens (CLS and
registers) dropped and no final norm, as OpenVLA reads them. The towers' inputs arrive stacked on the
channel axis (`[B, 3 * n_towers, H, W]`, DINOv2 first), their features leave concatenated on it.
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from vlaforge.config import ConfigError, VLAConfig


def create_tower(config: VLAConfig, index: int) -> nn.Module:
    """Builds tower `index` with timm, applying the optional size overrides of `timm_model_kwargs`."""
    kwargs = dict(config.timm_model_kwargs[index]) if config.timm_model_kwargs else {}
    tower = timm.create_model(
        config.timm_model_ids[index],
        pretrained=False,
        num_classes=0,
        img_size=config.image_sizes[index],
        act_layer=config.timm_override_act_layers[index],
        **kwargs,
    )
    if len(tower.blocks) < 2:
        raise ConfigError(f"tower {config.timm_model_ids[index]} has depth {len(tower.blocks)}; need >= 2")
    return tower


def tower_features(tower: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Patch tokens after block `depth - 2`: no final norm, prefix tokens dropped. `[B, 3, H, W] -> [B, P, Dt]`.

    `stop_early` skips the last block, whose output OpenVLA never uses (the original computes it anyway).
    """
    (features,) = tower.forward_intermediates(
        images,
        indices=[len(tower.blocks) - 2],
        norm=False,
        stop_early=True,
        output_fmt="NLC",
        intermediates_only=True,
    )
    return features  # [B, P, Dt]


class VisionBackbone(nn.Module):
    """One or two timm towers whose patch features are concatenated on the channel axis.

    Attribute names (`featurizer`, `fused_featurizer`) are the checkpoint's key names.
    """

    def __init__(self, config: VLAConfig) -> None:
        super().__init__()
        self.featurizer = create_tower(config, 0)
        self.fused_featurizer = create_tower(config, 1) if config.use_fused_vision_backbone else None
        towers = self.towers
        self.embed_dim = sum(t.embed_dim for t in towers)  # Dv: 1024 + 1152 = 2176 for openvla-7b
        self.num_patches = towers[0].patch_embed.num_patches  # P: 256 at 224 px, patch 14
        if any(t.patch_embed.num_patches != self.num_patches for t in towers):
            raise ConfigError(f"towers disagree on the patch count: {[t.patch_embed.num_patches for t in towers]}")
        self.image_size = config.image_sizes[0]

    @property
    def towers(self) -> list[nn.Module]:
        """The towers in input-channel order (DINOv2 first)."""
        return [t for t in (self.featurizer, self.fused_featurizer) if t is not None]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, 3 * n_towers, H, W] -> [B, P, Dv]`."""
        towers = self.towers
        expected = (3 * len(towers), self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape [B, {expected[0]}, {expected[1]}, {expected[2]}] "
                f"({len(towers)} tower(s) x RGB), got {list(pixel_values.shape)}; use the model's processor"
            )
        per_tower = torch.split(pixel_values, 3, dim=1)  # n_towers x [B, 3, H, W]
        features = [tower_features(t, x) for t, x in zip(towers, per_tower, strict=True)]  # [B, P, Dt] each
        return torch.cat(features, dim=2)  # [B, P, Dv]
