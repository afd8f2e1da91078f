"""OpenVLA training samples and batches from one or more episode datasets (any format).

Per step `t` of an episode the sample is what OpenVLA trains on (`RLDSBatchTransform` + the collator):

    input_ids  [BOS] In: What action should the robot take to {task}? / Out: ▁ a1 .. aA [EOS]
    labels     IGNORE_INDEX everywhere except a1 .. aA and EOS (the loss is on the actions only)
    pixel_values  [3 * n_towers, H, W]: the first camera at t, augmented (train) then `ImageTransform`

Actions are BOUNDS_Q99-normalized with the statistics of the dataset they come from (mask: the gripper stays
raw), then tokenized with `ActionTokenizer`. Options for the later issues, all off by default:

    extra_pixel_values   [N_cam - 1, C, H, W]  further cameras at t          (config.cameras)
    proprio              [S]                   normalized state at t         (config.use_proprio)
    action_chunk         [K, A]                normalized actions t..t+K-1, padded with the last action
    action_chunk_mask    [K] bool              False on the padding          (config.action_chunk = K)
    history_pixel_values [H, C, H, W]          first camera at t-H..t-1, padded with frame 0
    history_mask         [H] bool              False on the padding          (config.history = H)

Every sample also has `action` `[A]` (the normalized action at t) and `dataset_name`.

`VLAMixtureDataset` (an `IterableDataset`, the training path) mixes datasets with sampling weights: each
step picks a dataset by weight and takes the next step of its current episode (episodes in shuffled order,
each decoded in one sequential pass), and a shuffle buffer of `shuffle_buffer` steps decorrelates the
stream, as the original's interleave + shuffle. Episodes are sharded over DataLoader workers and
distributed ranks. `VLAFrameDataset` is the map-style equivalent (random access by seeking; evaluation).
`PaddedCollator` right-pads into a batch.

    statistics = compute_statistics([ds_a, ds_b])                  # saved as dataset_statistics.json
    data = VLAMixtureDataset([ds_a, ds_b], SampleBuilder(tokenizer, vla_config, statistics), weights=[1, 0.5])
    loader = DataLoader(data, batch_size=16, collate_fn=PaddedCollator(vla_config.pad_token_id), num_workers=2)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from transformers import PreTrainedTokenizerBase

from vlaforge.actions.normalize import ActionStats, NormalizationError, normalize_actions
from vlaforge.actions.tokenizer import ActionTokenizer
from vlaforge.config import VLAConfig
from vlaforge.constants import IGNORE_INDEX
from vlaforge.data.augment import AugmentConfig, ImageAugmentation
from vlaforge.data.episode import DataError, Episode, EpisodeDataset
from vlaforge.data.prompt import PromptBuilder
from vlaforge.data.stats import compute_dataset_stats, openvla_entry
from vlaforge.data.transforms import ImageTransform


@dataclass
class VLADataConfig:
    """What a training sample holds and how samples are drawn."""

    cameras: list[str] | None = None  # cameras per step, first = the model's image; None = each dataset's first
    image_augmentation: bool = True  # OpenVLA's train-time augmentation (crop 0.9, color jitter); train only
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # its ranges
    use_proprio: bool = False  # add the normalized state at t as "proprio"
    action_chunk: int = 0  # K > 0: add the next K normalized actions as "action_chunk" (+ mask)
    tokenize_chunk: bool = False  # the target tokens are the whole K-step chunk instead of the action at t
    history: int = 0  # H > 0: add the H previous frames of the first camera as "history_pixel_values" (+ mask)
    predict_stop_token: bool = True  # put the loss on the stop token too, as the original
    shuffle_buffer: int = 1000  # steps held for shuffling (about 150 MB of 224 px frames)
    balance_weights: bool = False  # multiply mixture weights by dataset size (the original's balance_weights)
    repeat: bool = True  # cycle through the data forever (training); False = one pass
    seed: int = 7  # seed of episode order, mixture draws, shuffling and augmentation


def compute_statistics(
    datasets: Sequence[EpisodeDataset],
    action_masks: dict[str, Sequence[bool]] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """`dataset_statistics.json` content for the datasets: `{name: {"action": {...}, "proprio": {...}, ...}}`.

    Args:
        datasets: the training datasets; their names must differ (they key the statistics).
        action_masks: per dataset name, which action dims are normalized; default OpenVLA's (gripper of 7-D
            actions raw, else all dims).
        progress: show progress bars.
    """
    names = [ds.name for ds in datasets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DataError(f"datasets share the names {duplicates}; give each a distinct name (it keys the statistics)")
    masks = action_masks or {}
    return {
        ds.name: openvla_entry(compute_dataset_stats(ds, progress=progress), ds.num_episodes, masks.get(ds.name))
        for ds in datasets
    }


@dataclass
class StepRecord:
    """One step waiting in the shuffle buffer: raw frames plus the episode's normalized actions."""

    dataset: str  # dataset name (selects the statistics)
    task: str  # instruction
    actions: np.ndarray  # [T, A] normalized actions of the whole episode (shared, small)
    proprio: np.ndarray | None  # [T, S] normalized states, or None
    t: int  # the step
    images: list[np.ndarray]  # per camera, [H, W, 3] uint8 at t
    history: list[np.ndarray | None]  # first camera at t-H..t-1; None before the episode start


class SampleBuilder:
    """Turns steps into model samples: normalize, augment, transform, tokenize.

    Args:
        tokenizer: the model's text tokenizer.
        vla_config: the model config (image size and towers, vocabulary, prompt length).
        statistics: `dataset_statistics.json` content covering every dataset that will be sampled.
        config: sample options.
        train: apply the train-time augmentation (if enabled); False = the deterministic eval transform.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vla_config: VLAConfig,
        statistics: dict[str, dict[str, Any]],
        config: VLADataConfig | None = None,
        train: bool = True,
    ) -> None:
        self.config = config or VLADataConfig()
        self.statistics = statistics
        self.prompts = PromptBuilder(tokenizer, vla_config.llm_max_length)
        self.action_tokenizer = ActionTokenizer(vla_config.vocab_end, vla_config.n_action_bins)
        self.image_transform = ImageTransform(vla_config)
        use_aug = train and self.config.image_augmentation
        self.augmentation = ImageAugmentation(self.config.augment, self.config.seed) if use_aug else None
        self.images_per_sample = vla_config.images_per_sample
        if self.images_per_sample > 1:
            n_cameras = len(self.config.cameras or [None])
            if n_cameras != vla_config.num_images or self.config.history != vla_config.history - 1:
                raise DataError(
                    f"the model takes {vla_config.num_images} camera(s) and {vla_config.history - 1} earlier frame(s) "
                    f"but the data options give {n_cameras} camera(s) and history={self.config.history}; set "
                    "VLADataConfig(cameras=[...], history=...) to match the model"
                )
        self._action_stats: dict[str, ActionStats] = {}
        self._proprio_stats: dict[str, ActionStats] = {}
        for name, entry in statistics.items():
            if "action" not in entry:
                raise NormalizationError(
                    f"statistics of dataset {name!r} have no 'action' entry (found {sorted(entry)})"
                )
            self._action_stats[name] = ActionStats.from_dict(entry["action"], dataset=name, feature="action")
            if "proprio" in entry:
                proprio = {k: v for k, v in entry["proprio"].items() if k != "mask"}  # the state is fully normalized
                self._proprio_stats[name] = ActionStats.from_dict(proprio, dataset=name, feature="proprio")

    def cameras(self, dataset: EpisodeDataset) -> list[str]:
        """The cameras read from `dataset`, checked to exist."""
        available = dataset.camera_names
        wanted = self.config.cameras or available[:1]
        missing = [c for c in wanted if c not in available and c.removeprefix("observation.images.") not in available]
        if not wanted or missing:
            raise DataError(f"dataset {dataset.name!r} has cameras {available}; missing {missing or 'any camera'}")
        return wanted

    def normalize(self, episode: Episode) -> tuple[np.ndarray, np.ndarray | None]:
        """The episode's normalized actions `[T, A]` and (if used) states `[T, S]`; errors name dataset and feature."""
        if episode.dataset not in self._action_stats:
            raise NormalizationError(
                f"no statistics for dataset {episode.dataset!r} (have: {', '.join(sorted(self._action_stats))}); "
                "compute them with compute_statistics() over every training dataset"
            )
        actions = normalize_actions(episode.actions, self._action_stats[episode.dataset]).astype(np.float32)
        proprio = None
        if self.config.use_proprio:
            if episode.state is None:
                raise DataError(f"{episode.where}: use_proprio is set but the dataset has no state")
            if episode.dataset not in self._proprio_stats:
                raise NormalizationError(f"statistics of dataset {episode.dataset!r} have no 'proprio' entry")
            proprio = normalize_actions(episode.state, self._proprio_stats[episode.dataset]).astype(np.float32)
        return actions, proprio

    def records(self, episode: Episode, cameras: Sequence[str]) -> Iterator[StepRecord]:
        """Every step of an episode as a `StepRecord` (frames decoded in one pass, then copied per step)."""
        actions, proprio = self.normalize(episode)
        frames = [episode.frames(camera).read() for camera in cameras]  # per camera [T, H, W, 3]
        for t in range(episode.length):
            history = [np.array(frames[0][t - h]) if t - h >= 0 else None for h in range(self.config.history, 0, -1)]
            images = [np.array(f[t]) for f in frames]  # copies: the episode's arrays can be freed
            yield StepRecord(episode.dataset, episode.task, actions, proprio, t, images, history)

    def _pixels(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        if self.augmentation is not None:
            image = self.augmentation(image, rng)
        return self.image_transform(image)  # [3 * n_towers, H, W]

    def _model_pixels(self, record: StepRecord, rng: np.random.Generator) -> torch.Tensor:
        """All images of a step in `VLAConfig.images_per_sample` order; missing early frames repeat frame 0."""
        present = [h for h in record.history if h is not None]
        first = present[0] if present else record.images[0]
        history = [h if h is not None else first for h in record.history]  # oldest first
        return torch.stack([self._pixels(i, rng) for i in history + list(record.images)])  # [N, C, H, W]

    def build(self, record: StepRecord, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """The model sample of one step (see the module docstring for the keys)."""
        cfg, rng = self.config, rng or np.random.default_rng()
        length = record.actions.shape[0]
        sample: dict[str, Any] = {"dataset_name": record.dataset}
        if self.images_per_sample > 1:  # the model's layout: [earlier frames of camera 0 | current cameras]
            sample["pixel_values"] = self._model_pixels(record, rng)  # [N, C, H, W]
        else:
            sample["pixel_values"] = self._pixels(record.images[0], rng)  # [C, H, W]
        if len(record.images) > 1 and self.images_per_sample == 1:
            sample["extra_pixel_values"] = torch.stack([self._pixels(i, rng) for i in record.images[1:]])
        target = record.actions[record.t : record.t + 1]  # [1, A]
        if cfg.action_chunk > 0:
            steps = np.minimum(np.arange(record.t, record.t + cfg.action_chunk), length - 1)  # [K] clamped at the end
            chunk = record.actions[steps]  # [K, A]
            sample["action_chunk"] = torch.from_numpy(chunk)
            sample["action_chunk_mask"] = torch.from_numpy(np.arange(record.t, record.t + cfg.action_chunk) < length)
            target = chunk if cfg.tokenize_chunk else target
        action_ids = self.action_tokenizer.encode(target).reshape(-1).tolist()  # [K * A] or [A]
        input_ids, labels = self.prompts.training_ids(record.task, action_ids, cfg.predict_stop_token)
        sample["input_ids"] = torch.tensor(input_ids, dtype=torch.long)
        sample["labels"] = torch.tensor(labels, dtype=torch.long)
        sample["action"] = torch.from_numpy(record.actions[record.t].copy())
        if record.proprio is not None:
            sample["proprio"] = torch.from_numpy(record.proprio[record.t].copy())
        if cfg.history > 0 and self.images_per_sample == 1:
            present = [h for h in record.history if h is not None]
            pad = present[0] if present else record.images[0]  # frame 0 of the episode either way
            filled = [h if h is not None else pad for h in record.history]
            sample["history_pixel_values"] = torch.stack([self._pixels(h, rng) for h in filled])  # [H, C, H, W]
            sample["history_mask"] = torch.tensor([h is not None for h in record.history])
        return sample


def _shard() -> tuple[int, int]:
    """(shard id, number of shards) over distributed ranks x DataLoader workers."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    worker = get_worker_info()
    workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
    return rank * workers + worker_id, world * workers


class VLAMixtureDataset(IterableDataset):
    """Training samples drawn from a weighted mixture of datasets, shuffled through a buffer.

    Args:
        datasets: the datasets (any `EpisodeDataset`); their names key the statistics.
        builder: the `SampleBuilder` (its statistics must cover every dataset).
        weights: sampling weight per dataset (default equal); with `balance_weights` multiplied by sizes.
    """

    def __init__(
        self, datasets: Sequence[EpisodeDataset], builder: SampleBuilder, weights: Sequence[float] | None = None
    ) -> None:
        if not datasets:
            raise DataError("the mixture needs at least one dataset")
        self.datasets, self.builder, self.config = list(datasets), builder, builder.config
        weights = np.ones(len(datasets)) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(datasets),) or np.any(weights < 0) or weights.sum() <= 0:
            raise DataError(f"need one non-negative weight per dataset ({len(datasets)}), got {weights.tolist()}")
        if self.config.balance_weights:
            weights = weights * np.array([ds.num_frames for ds in datasets], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.cameras = [builder.cameras(ds) for ds in datasets]  # fails early on a missing camera
        for ds in datasets:
            builder.normalize(ds.episode(0))  # fails early on missing or mismatched statistics
        self._epoch = 0

    @property
    def num_frames(self) -> int:
        """Steps over all datasets (one pass)."""
        return sum(ds.num_frames for ds in self.datasets)

    def set_epoch(self, epoch: int) -> None:
        """Changes episode order and shuffling for the next pass (call per epoch when `repeat` is False)."""
        self._epoch = epoch

    def _steps(self, index: int, rng: np.random.Generator, shard: int, shards: int) -> Iterator[StepRecord]:
        dataset = self.datasets[index]
        episodes = np.arange(dataset.num_episodes)[shard::shards]
        if len(episodes) == 0:  # fewer episodes than shards: every shard reads them all
            episodes = np.arange(dataset.num_episodes)
        while True:
            for episode_index in rng.permutation(episodes):
                yield from self.builder.records(dataset.episode(int(episode_index)), self.cameras[index])
            if not self.config.repeat:
                return

    def __iter__(self) -> Iterator[dict[str, Any]]:
        shard, shards = _shard()
        rng = np.random.default_rng([self.config.seed, shard, self._epoch])
        streams = [self._steps(i, rng, shard, shards) for i in range(len(self.datasets))]
        active = [i for i in range(len(streams)) if self.weights[i] > 0]
        buffer: list[StepRecord] = []
        size = max(1, self.config.shuffle_buffer)
        while active:
            probs = self.weights[active] / self.weights[active].sum()
            pick = active[int(rng.choice(len(active), p=probs))]
            try:
                record = next(streams[pick])
            except StopIteration:
                active.remove(pick)
                continue
            if len(buffer) < size:
                buffer.append(record)
                continue
            slot = int(rng.integers(len(buffer)))
            buffer[slot], record = record, buffer[slot]
            yield self.builder.build(record, rng)
        rng.shuffle(buffer)
        for record in buffer:
            yield self.builder.build(record, rng)


class VLAFrameDataset(Dataset):
    """Map-style samples: index -> (dataset, episode, step), frames decoded by seeking. For evaluation.

    Args:
        datasets: the datasets.
        builder: the `SampleBuilder` (build it with `train=False` for the deterministic eval transform).
    """

    def __init__(self, datasets: Sequence[EpisodeDataset], builder: SampleBuilder) -> None:
        self.datasets, self.builder = list(datasets), builder
        self.cameras = [builder.cameras(ds) for ds in datasets]
        self._index: list[tuple[int, int, int]] = []  # (dataset, episode, first global step)
        total = 0
        for d, ds in enumerate(self.datasets):
            for e, length in enumerate(ds.episode_lengths()):
                self._index.append((d, e, total))
                total += length
        self._starts = np.array([start for _, _, start in self._index])
        self._total = total
        self._cache: dict[tuple[int, int], tuple[Episode, np.ndarray, np.ndarray | None]] = {}
        self._epoch = 0

    def __len__(self) -> int:
        return self._total

    def set_epoch(self, epoch: int) -> None:
        """Draws other augmentations for the next pass (sample `i` is reproducible given seed, epoch and i)."""
        self._epoch = epoch

    def _episode(self, d: int, e: int) -> tuple[Episode, np.ndarray, np.ndarray | None]:
        if (d, e) not in self._cache:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            episode = self.datasets[d].episode(e)
            self._cache[(d, e)] = (episode, *self.builder.normalize(episode))
        return self._cache[(d, e)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._total:
            raise IndexError(f"index {index} is out of range for {self._total} steps")
        d, e, start = self._index[int(np.searchsorted(self._starts, index, side="right")) - 1]
        episode, actions, proprio = self._episode(d, e)
        t, depth = index - start, self.builder.config.history
        frames = [episode.frames(camera) for camera in self.cameras[d]]
        window = frames[0].read(max(0, t - depth), t + 1)  # [<= H + 1, H, W, 3]: one seek for step and history
        history = [window[-h - 1] if t - h >= 0 else None for h in range(depth, 0, -1)]  # frame t - h
        images = [window[-1]] + [f[t] for f in frames[1:]]
        record = StepRecord(episode.dataset, episode.task, actions, proprio, t, images, history)
        return self.builder.build(record, np.random.default_rng([self.builder.config.seed, self._epoch, index]))


class PaddedCollator:
    """Stacks samples into a batch: right-padded `input_ids`, `attention_mask`, `labels`; stacked tensors.

    Args:
        pad_token_id: id of `<PAD>` (`vla_config.pad_token_id`).
        max_length: longest allowed sequence; a longer one raises instead of being cut (cutting would drop
            action tokens).
    """

    def __init__(self, pad_token_id: int, max_length: int | None = None) -> None:
        self.pad_token_id, self.max_length = pad_token_id, max_length

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        lengths = torch.tensor([len(s["input_ids"]) for s in samples])
        width = int(lengths.max())
        if self.max_length is not None and width > self.max_length:
            raise ValueError(f"a sample has {width} tokens, more than max_length={self.max_length}")
        input_ids = torch.full((len(samples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
        for row, sample in enumerate(samples):
            input_ids[row, : len(sample["input_ids"])] = sample["input_ids"]
            if "labels" in sample:  # parallel heads train from action_chunk and have none
                labels[row, : len(sample["labels"])] = sample["labels"]
        batch: dict[str, Any] = {
            "input_ids": input_ids,  # [B, T]
            "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),  # [B, T]
            "dataset_names": [s["dataset_name"] for s in samples],
        }
        if "labels" in samples[0]:
            batch["labels"] = labels  # [B, T]
        for key, value in samples[0].items():
            if key not in batch and key not in ("input_ids", "labels", "dataset_name") and torch.is_tensor(value):
                batch[key] = torch.stack([s[key] for s in samples])  # [B, ...]
        return batch
