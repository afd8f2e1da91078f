"""Image transforms: the processor's deterministic resize + per-tower normalization.

Every tower sees the same RGB image, resized to its input size with PIL bicubic ("resize-naive", no
aspect ratio kept, as openvla-7b) or padded to a square first ("letterbox", filled with the tower's mean
colour), then scaled to [0, 1] and normalized with the tower's mean/std from timm's pretrained config
(ImageNet statistics for DINOv2, 0.5/0.5 for SigLIP). The towers' results are stacked on the channel axis.
The same transform is used in training (after augmentation), evaluation and serving: no train/serve skew.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
from PIL import Image

from vlaforge.config import ConfigError, VLAConfig

_PIL_INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def to_pil_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Accepts a PIL image or an `[H, W, 3]` uint8 array; anything else raises a ValueError that says why."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array must be uint8 (0..255), got {image.dtype}; convert with .astype(np.uint8)")
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image array must have shape [H, W, 3] (RGB), got {list(image.shape)}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"image array is empty: shape {list(image.shape)}")
        return Image.fromarray(image)
    raise ValueError(f"image must be a PIL.Image or a numpy uint8 array [H, W, 3], got {type(image).__name__}")


def tower_mean_std(model_id: str) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Mean, std and interpolation of a timm model, read from timm's pretrained config (no download)."""
    cfg = timm.models.get_pretrained_cfg(model_id)
    if cfg is None:
        raise ConfigError(f"timm has no pretrained config for {model_id!r}; is the name right (timm.list_models)?")
    return tuple(cfg.mean), tuple(cfg.std), cfg.interpolation


def letterbox(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pads the shorter side symmetrically so the image becomes square."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class ImageTransform:
    """Image -> `[3 * n_towers, H, W]` float32 pixel values for the model's towers."""

    def __init__(self, config: VLAConfig) -> None:
        self.size = config.image_sizes[0]
        self.strategy = config.image_resize_strategy
        stats = [tower_mean_std(mid) for mid in config.timm_model_ids]
        self.means = [torch.tensor(m, dtype=torch.float32)[:, None, None] for m, _, _ in stats]  # [3, 1, 1]
        self.stds = [torch.tensor(s, dtype=torch.float32)[:, None, None] for _, s, _ in stats]  # [3, 1, 1]
        self.fills = [tuple(int(x * 255) for x in m) for m, _, _ in stats]
        self.interpolation = _PIL_INTERPOLATION[stats[0][2]]

    def resize(self, image: Image.Image, tower: int) -> Image.Image:
        """The tower's square input image."""
        if self.strategy == "letterbox":
            image = letterbox(image, self.fills[tower])
        if image.size == (self.size, self.size):
            return image
        return image.resize((self.size, self.size), self.interpolation)

    def normalize(self, image: Image.Image, tower: int) -> torch.Tensor:
        """`[H, W, 3]` uint8 -> `[3, H, W]` float32, scaled to [0, 1] then normalized with the tower's stats."""
        # Channel-first and contiguous before the arithmetic: broadcasting over a permuted view is ~5x slower.
        channels_first = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)  # [3, H, W]
        pixels = torch.from_numpy(np.ascontiguousarray(channels_first))
        return (pixels.float() / 255.0 - self.means[tower]) / self.stds[tower]

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """`[3 * n_towers, H, W]`; the resize is shared when the towers would compute the same image."""
        rgb = to_pil_rgb(image)
        shared = self.resize(rgb, 0) if self.strategy == "resize-naive" else None
        per_tower = [self.normalize(shared or self.resize(rgb, t), t) for t in range(len(self.means))]
        return torch.cat(per_tower, dim=0)  # [3 * n_towers, H, W]
