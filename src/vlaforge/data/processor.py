"""VLAProcessor: images + instructions -> `input_ids`, `attention_mask`, `pixel_values`.

Bundles the tokenizer (with the prompt builder) and the image transform, like the original
`PrismaticProcessor`. Batches are right padded with `<PAD>`, as the original's collator.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from vlaforge.config import ConfigError, VLAConfig
from vlaforge.data.prompt import PromptBuilder
from vlaforge.data.transforms import ImageTransform

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def pad_right(sequences: Sequence[Sequence[int]], pad_value: int) -> torch.Tensor:
    """`[B, T_max]` int64 tensor, each row right padded with `pad_value`."""
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), pad_value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, config: VLAConfig) -> None:
    """The tokenizer must put its action tokens and `<PAD>` where the model expects them."""
    if tokenizer.vocab_size != config.vocab_end:
        raise ConfigError(
            f"the tokenizer's base vocabulary has {tokenizer.vocab_size} ids but the model's action tokens end at "
            f"{config.vocab_end}; the tokenizer and config.json come from different models"
        )
    if tokenizer.pad_token_id != config.pad_token_id:
        raise ConfigError(f"tokenizer <PAD> id {tokenizer.pad_token_id} != config pad_token_id {config.pad_token_id}")
    rows = config.text_config.get("vocab_size")
    if rows is not None and len(tokenizer) > rows:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the LLM only {rows} embedding rows")


class VLAProcessor:
    """Turns raw observations into model inputs. Call it with one image + instruction, or lists of them."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: VLAConfig) -> None:
        check_tokenizer(tokenizer, config)
        self.tokenizer = tokenizer
        self.prompts = PromptBuilder(tokenizer, config.llm_max_length)
        self.image_transform = ImageTransform(config)
        self.pad_token_id = config.pad_token_id
        self.images_per_sample = config.images_per_sample  # cameras x history frames

    @staticmethod
    def is_saved_in(path: str | Path) -> bool:
        """True when `path` holds tokenizer files."""
        return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)

    @classmethod
    def from_pretrained(cls, path: str | Path, config: VLAConfig) -> VLAProcessor:
        """Loads the tokenizer saved in a checkpoint directory."""
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # AutoTokenizer warns that config.json is not a text model's
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        finally:
            transformers_logging.set_verbosity(verbosity)
        return cls(tokenizer, config)

    def save_pretrained(self, path: str | Path) -> None:
        """Writes the tokenizer files into `path`."""
        self.tokenizer.save_pretrained(str(path))

    def pixel_values(self, sample_images: Image.Image | np.ndarray | Sequence) -> torch.Tensor:
        """One sample's pixels: `[C, H, W]`, or `[N, C, H, W]` for models with several images per sample."""
        if self.images_per_sample == 1:
            return self.image_transform(sample_images)  # [C, H, W]
        if isinstance(sample_images, (Image.Image, np.ndarray)) or len(sample_images) != self.images_per_sample:
            got = 1 if isinstance(sample_images, (Image.Image, np.ndarray)) else len(sample_images)
            raise ValueError(
                f"this model takes {self.images_per_sample} images per sample (earlier frames of the first camera, "
                f"oldest first, then the current frame of each camera); got {got}"
            )
        return torch.stack([self.image_transform(img) for img in sample_images])  # [N, C, H, W]

    def __call__(
        self,
        images: Image.Image | np.ndarray | Sequence,
        instructions: str | Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """Returns `input_ids [B, T]`, `attention_mask [B, T]` and `pixel_values`.

        `pixel_values` is `[B, C, H, W]`, or `[B, N, C, H, W]` with several images per sample.
        """
        if isinstance(instructions, str):
            instructions, images = [instructions], [images]
        if isinstance(images, (Image.Image, np.ndarray)):
            raise ValueError("got one image for a list of instructions; pass one image (or image list) per instruction")
        if len(images) != len(instructions):
            raise ValueError(f"got {len(images)} images for {len(instructions)} instructions; they must pair up")
        if len(instructions) == 0:
            raise ValueError("empty batch: pass at least one image and instruction")
        ids = [self.prompts.prompt_ids(text) for text in instructions]
        input_ids = pad_right(ids, self.pad_token_id)  # [B, T]
        attention_mask = (
            torch.arange(input_ids.shape[1])[None, :] < torch.tensor([len(i) for i in ids])[:, None]
        ).long()
        pixel_values = torch.stack([self.pixel_values(img) for img in images])  # [B, (N,) C, H, W]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
