"""A small in-memory dataset of random images, a few instructions and their actions.

Each task (instruction) has its own image colour and mean action, so a model can learn the mapping in a
few hundred steps: tests, smoke runs and `vlaforge bench train` use it when no dataset path is given.
Samples have exactly the form of the real data pipeline's: the prompt + action tokens with labels on the
actions only (token head), or the prompt with a normalized `action_chunk` (parallel heads), plus
`proprio` when the model takes the robot state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlaforge.actions.normalize import ActionStats, normalize_actions
from vlaforge.actions.tokenizer import ActionTokenizer
from vlaforge.config import VLAConfig
from vlaforge.constants import IGNORE_INDEX
from vlaforge.data.processor import VLAProcessor, pad_right
from vlaforge.train.config import SyntheticConfig

DATASET_NAME = "synthetic"
INSTRUCTIONS = (
    "pick up the red block", "open the top drawer", "press the blue button", "close the window",
    "push the mug to the left", "put the sponge in the bowl", "turn the faucet on", "slide the box forward",
)  # fmt: skip


class SyntheticDataset(Dataset):
    """Random images and actions grouped by task; deterministic for a given seed.

    Args:
        config: sizes and noise.
        seed: seed of every random draw.
        chunk: actions per sample (the model's `action_chunk`, K).
    """

    def __init__(self, config: SyntheticConfig, seed: int = 0, chunk: int = 1) -> None:
        if config.num_tasks > len(INSTRUCTIONS):
            raise ValueError(f"synthetic data has at most {len(INSTRUCTIONS)} tasks, got num_tasks={config.num_tasks}")
        rng = np.random.default_rng(seed)
        n, a, size = config.num_samples, config.action_dim, config.image_size
        self.config = config
        self.task = rng.integers(0, config.num_tasks, n)  # [N] task of each sample
        colours = rng.integers(40, 216, (config.num_tasks, 3))  # [tasks, 3]
        pixels = colours[self.task][:, None, None, :] + rng.integers(-30, 31, (n, size, size, 3))
        self.images = np.clip(pixels, 0, 255).astype(np.uint8)  # [N, S, S, 3]
        means = rng.uniform(-0.8, 0.8, (config.num_tasks, a))  # [tasks, A] in raw units
        noise = config.noise * rng.standard_normal((n, chunk, a))
        self.actions = means[self.task][:, None, :] + noise  # [N, K, A] raw actions
        if a == 7:  # Open-X convention: the last dimension is a binary gripper, left unnormalized
            self.actions[..., 6] = (means[self.task][:, None, 6] > 0).astype(np.float64)
        self.phase = rng.uniform(-1, 1, n)  # [N] scalar behind the proprio vector (its size comes from the model)
        self._processor: VLAProcessor | None = None
        self._model_config: VLAConfig | None = None
        self._stats: ActionStats | None = None

    # ------------------------------------------------------------------------------ metadata
    @property
    def instructions(self) -> list[str]:
        """The distinct instructions (a tokenizer trained from scratch learns its merges from them)."""
        return list(INSTRUCTIONS[: self.config.num_tasks])

    @property
    def action_dim(self) -> int:
        """A: action dimensions."""
        return self.config.action_dim

    def statistics(self) -> dict[str, dict[str, Any]]:
        """`dataset_statistics.json` content for this dataset, in the original's schema."""
        flat = self.actions.reshape(-1, self.action_dim)  # [N*K, A]
        mask = [True] * 6 + [False] if self.action_dim == 7 else [True] * self.action_dim
        action = {
            "mean": flat.mean(0), "std": flat.std(0), "max": flat.max(0), "min": flat.min(0),
            "q01": np.quantile(flat, 0.01, axis=0), "q99": np.quantile(flat, 0.99, axis=0),
        }  # fmt: skip
        entry = {k: v.tolist() for k, v in action.items()} | {"mask": mask}
        return {DATASET_NAME: {"action": entry, "num_transitions": len(flat), "num_trajectories": len(self)}}

    def attach(self, processor: VLAProcessor, model_config: VLAConfig) -> None:
        """Binds the model's tokenizer, image transform and head type; `__getitem__` needs them."""
        self._processor, self._model_config = processor, model_config
        self._stats = ActionStats.from_dict(self.statistics()[DATASET_NAME]["action"], DATASET_NAME)
        self._tokenizer = ActionTokenizer(model_config.vocab_end, model_config.n_action_bins)

    # ------------------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.task)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._processor is None or self._model_config is None:
            raise RuntimeError("call attach(processor, model_config) before reading samples")
        config, processor = self._model_config, self._processor
        instruction = INSTRUCTIONS[int(self.task[index])]
        normalized = normalize_actions(self.actions[index], self._stats)  # [K, A]
        images = [self.images[index]] * config.images_per_sample
        sample: dict[str, Any] = {
            "pixel_values": processor.pixel_values(images[0] if len(images) == 1 else images),
            "dataset_name": DATASET_NAME,
        }
        if config.parallel_decoding:
            sample["input_ids"] = torch.tensor(processor.prompts.prompt_ids(instruction))
            sample["action_chunk"] = torch.tensor(normalized, dtype=torch.float32)  # [K, A]
            sample["action_chunk_mask"] = torch.ones(len(normalized), dtype=torch.bool)  # [K]
        else:
            action_ids = self._tokenizer.encode(normalized[0]).tolist()  # [A]
            input_ids, labels = processor.prompts.training_ids(instruction, action_ids)
            sample["input_ids"], sample["labels"] = torch.tensor(input_ids), torch.tensor(labels)
        if config.proprio_dim:
            sample["proprio"] = torch.linspace(-1, 1, config.proprio_dim) * float(self.phase[index])  # [Dp]
        return sample


def collate_samples(samples: list[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-pads `input_ids` (with `<PAD>`) and `labels` (with IGNORE_INDEX), stacks every other tensor.

    Returns:
        `input_ids [B, T]`, `attention_mask [B, T]`, `labels [B, T]` (token head), `pixel_values`, any other
        per-sample tensors stacked, and `dataset_names` (a list of strings).
    """
    ids = [s["input_ids"].tolist() for s in samples]
    batch: dict[str, Any] = {"input_ids": pad_right(ids, pad_token_id)}  # [B, T]
    lengths = torch.tensor([len(i) for i in ids])
    batch["attention_mask"] = (torch.arange(batch["input_ids"].shape[1])[None] < lengths[:, None]).long()
    if "labels" in samples[0]:
        batch["labels"] = pad_right([s["labels"].tolist() for s in samples], IGNORE_INDEX)  # [B, T]
    for key, value in samples[0].items():
        if key not in batch and isinstance(value, torch.Tensor):
            batch[key] = torch.stack([s[key] for s in samples])
    batch["dataset_names"] = [s.get("dataset_name", "") for s in samples]
    return batch
