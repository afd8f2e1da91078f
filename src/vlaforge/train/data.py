"""Training data: open the datasets (or the synthetic one), batch them reproducibly, resume mid-epoch.

The loop only needs a torch `Dataset` of sample dicts and a collate function; where they come from is
decided here. Batches come from a step-indexed sampler: the global batch of optimizer step `s` is a fixed
slice of the permutation of epoch `s // steps_per_epoch` (seeded by `seed + epoch`), so the data position
of a run is just its step count, and a resumed run reads exactly the batches the uninterrupted run would.

Global batch of one step = `batch_size` x `grad_accumulation` x `world_size` samples. Micro-batch `m` of
rank `r` is the slice `[(m * world_size + r) * batch_size, ... + batch_size)` of it, so one process with
batch 4 and two processes with batch 2 see the same samples in each step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vlaforge.config import ConfigError, VLAConfig
from vlaforge.constants import IGNORE_INDEX
from vlaforge.data.processor import VLAProcessor
from vlaforge.train.config import TrainConfig
from vlaforge.train.synthetic import SyntheticDataset, collate_samples


@dataclass
class TrainData:
    """A dataset before it is bound to the model's processor, with what the model needs to know about it."""

    dataset: Dataset  # yields sample dicts (input_ids, labels / action_chunk, pixel_values, ...)
    statistics: dict[str, Any]  # dataset_statistics.json content, keyed by dataset name
    instructions: list[str]  # distinct instructions (for a tokenizer trained from scratch)
    action_dim: int  # A
    state_dim: int | None = None  # robot state dimensions (0: none); None: generated to fit the model (synthetic)
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None  # set by `bind`

    def bind(self, processor: VLAProcessor, model_config: VLAConfig) -> None:
        """Gives the dataset the model's tokenizer and image transform and sets the collate function."""
        self.dataset.attach(processor, model_config)
        self.collate = partial(collate_samples, pad_token_id=model_config.pad_token_id)


def check_dataset_paths(cfg: TrainConfig) -> None:
    """Raises FileNotFoundError naming the first dataset path that does not exist."""
    for path in cfg.data.datasets:
        if not Path(path).exists():
            raise FileNotFoundError(
                f"dataset path {path!r} does not exist; check --data.datasets (a LeRobot v3 directory holding "
                "meta/info.json, HDF5 file(s) or an RLDS directory), or leave it empty to train on synthetic data"
            )


def open_data(cfg: TrainConfig, chunk: int = 1) -> TrainData:
    """The training data named by `cfg.data` (synthetic when no dataset path is given)."""
    if not cfg.data.datasets:
        synthetic = SyntheticDataset(cfg.data.synthetic, seed=cfg.seed, chunk=chunk)
        return TrainData(synthetic, synthetic.statistics(), synthetic.instructions, synthetic.action_dim)
    return open_datasets(cfg)


def dataset_tasks(dataset: Any) -> list[str]:
    """The distinct instructions of an episode dataset (its task table when it has one, else every episode's)."""
    tasks = getattr(dataset, "tasks", None)
    if tasks:
        return sorted(tasks)
    return sorted({dataset.episode(i).task for i in range(dataset.num_episodes)})


def open_datasets(cfg: TrainConfig) -> TrainData:
    """Episode datasets (LeRobot v3, HDF5, RLDS) through the data layer, concatenated, with their statistics.

    Every step of every episode is one sample; sampling is uniform over steps, so a dataset's share of the
    training is its share of the steps (the original's `balance_weights=True`).
    """
    from vlaforge.data.batches import compute_statistics
    from vlaforge.data.sources import open_dataset

    check_dataset_paths(cfg)
    datasets = [open_dataset(path) for path in cfg.data.datasets]
    statistics = compute_statistics(datasets, progress=False)
    dims = {name: len(entry["action"]["q01"]) for name, entry in statistics.items()}
    if len(set(dims.values())) != 1:
        raise ConfigError(f"the datasets have different action dimensions {dims}; train one robot's datasets together")
    states = {name: len(entry["proprio"]["q01"]) if "proprio" in entry else 0 for name, entry in statistics.items()}
    if len(set(states.values())) != 1:
        raise ConfigError(f"the datasets have different state dimensions {states}; train one robot's datasets together")
    instructions = sorted({task for ds in datasets for task in dataset_tasks(ds)})
    samples = EpisodeSamples(datasets, statistics, cfg)
    return TrainData(samples, statistics, instructions, next(iter(dims.values())), next(iter(states.values())))


class EpisodeSamples(Dataset):
    """Map-style training samples of episode datasets: every step, built by the data layer's SampleBuilder.

    Sample `i` is step `i` of the concatenated datasets (`vlaforge.data.batches.VLAFrameDataset`); frames are
    decoded by seeking, augmentation is seeded per sample, so any sample can be rebuilt at any time (the step
    sampler's exact resume relies on that).
    """

    def __init__(self, datasets: list[Any], statistics: dict[str, Any], cfg: TrainConfig) -> None:
        self.datasets, self.statistics, self.cfg = datasets, statistics, cfg
        self.frames: Dataset | None = None
        self.parallel = False  # parallel heads take prompt-only input_ids (set by attach)
        self._length = sum(ds.num_frames for ds in datasets)

    def attach(self, processor: VLAProcessor, model_config: VLAConfig) -> None:
        """Builds the sample builder from the model's tokenizer, image transform and input options."""
        from vlaforge.data.batches import SampleBuilder, VLADataConfig, VLAFrameDataset

        options = VLADataConfig(
            cameras=list(self.cfg.data.cameras) or None,
            image_augmentation=self.cfg.data.image_aug,
            use_proprio=model_config.proprio_dim > 0,
            action_chunk=model_config.action_chunk if model_config.parallel_decoding else 0,
            history=model_config.history - 1,
            seed=self.cfg.seed,
        )  # fmt: skip
        builder = SampleBuilder(processor.tokenizer, model_config, self.statistics, options, train=True)
        self.frames = VLAFrameDataset(self.datasets, builder)
        self.parallel = model_config.parallel_decoding

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.frames is None:
            raise RuntimeError("call attach(processor, model_config) before reading samples")
        sample = self.frames[index]
        if self.parallel:
            sample = prompt_only(sample)
        return sample


def prompt_only(sample: dict[str, Any]) -> dict[str, Any]:
    """A parallel-head sample: the prompt without its action tokens (the targets are in `action_chunk`).

    The data layer builds token-head samples (prompt + action tokens + EOS, labels on the last ones); a
    parallel head must not see the answer in its input, so the labelled tail is cut off and the labels go.
    """
    labels = sample.pop("labels")
    labelled = (labels != IGNORE_INDEX).nonzero()
    end = int(labelled[0]) if len(labelled) else len(labels)
    sample["input_ids"] = sample["input_ids"][:end]
    return sample


def check_action_dim(model_config: VLAConfig, data: TrainData) -> None:
    """The dataset's action (and state) dimensions must be the model's where the model fixes them."""
    expected = model_config.action_dim
    if expected is not None and expected != data.action_dim:
        raise ConfigError(
            f"the dataset has {data.action_dim}-D actions but the model predicts {expected}-D actions "
            "(config.json action_dim); train on matching data or start from a model built for this robot"
        )
    for name, entry in (model_config.norm_stats or {}).items():
        dim = len(entry.get("action", {}).get("q01", []))
        if name in data.statistics and dim and dim != data.action_dim:
            raise ConfigError(
                f"the model's statistics for dataset {name!r} are {dim}-D but the dataset's actions are "
                f"{data.action_dim}-D; is this the same dataset the checkpoint was trained on?"
            )
    if model_config.proprio_dim and data.state_dim is not None and data.state_dim != model_config.proprio_dim:
        raise ConfigError(
            f"the model takes a {model_config.proprio_dim}-D robot state (config.json proprio_dim) but the "
            f"dataset's state is {data.state_dim}-D" + (" (it has none)" if data.state_dim == 0 else "")
        )


class StepSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches (lists of indices) for optimizer steps `start_step`..`max_steps - 1`.

    Args:
        size: dataset length.
        batch_size: samples per micro-batch.
        accumulation: micro-batches per optimizer step.
        world_size: data-parallel processes.
        rank: this process.
        seed: permutation seed (epoch `e` uses `seed + e`).
        shuffle: False keeps dataset order in every epoch.
        start_step: first optimizer step (the resume position).
        max_steps: one past the last optimizer step.
    """

    def __init__(
        self, size: int, batch_size: int, accumulation: int, world_size: int, rank: int, seed: int,
        shuffle: bool, start_step: int, max_steps: int,
    ) -> None:  # fmt: skip
        self.global_batch = batch_size * accumulation * world_size
        if size < self.global_batch:
            raise ConfigError(
                f"the dataset has {size} samples but one optimizer step needs {self.global_batch} "
                f"(batch_size {batch_size} x grad_accumulation {accumulation} x {world_size} processes)"
            )
        self.size, self.batch_size, self.accumulation = size, batch_size, accumulation
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.start_step, self.max_steps = start_step, max_steps
        self.steps_per_epoch = size // self.global_batch  # the incomplete tail of each epoch is skipped

    def step_indices(self, step: int) -> list[int]:
        """All `global_batch` indices of optimizer step `step`."""
        epoch, offset = divmod(step, self.steps_per_epoch)
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(self.size)
        return order[offset * self.global_batch : (offset + 1) * self.global_batch].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            indices = self.step_indices(step)
            for micro in range(self.accumulation):
                start = (micro * self.world_size + self.rank) * self.batch_size
                yield indices[start : start + self.batch_size]

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step) * self.accumulation


def build_loader(data: TrainData, sampler: StepSampler, num_workers: int) -> DataLoader:
    """A DataLoader over the step sampler (workers are seeded by torch from the restored RNG state)."""
    if data.collate is None:
        raise RuntimeError("bind the data to the model's processor (TrainData.bind) before building the loader")
    return DataLoader(
        data.dataset, batch_sampler=sampler, collate_fn=data.collate, num_workers=num_workers,
        persistent_workers=False,
    )  # fmt: skip
