"""Data: episode datasets in three formats, statistics, and OpenVLA training batches.

Modules (imported on use; `episode`, `video`, `lerobot`, `hdf5`, `rlds`, `oxe`, `stats`, `convert`, `sources`
import no torch, so the RLDS venv can use them):

    episode     Episode, EpisodeDataset, DataError: the interface every format is read into
    lerobot     LeRobotDataset (reader), LeRobotWriter (crash-safe, resumable writer): LeRobotDataset v3.0
    hdf5        HDF5Dataset: robomimic / LIBERO files
    rlds        RLDSDataset: RLDS / TFDS (Open X-Embodiment), needs vlaforge[rlds]
    oxe         per-dataset standardization (camera, action layout, gripper convention)
    sources     open_dataset(path): any of the three, format detected
    convert     convert_to_lerobot(dataset, out)
    stats       RunningStats, compute_dataset_stats, dataset_statistics.json I/O
    inspect     inspect_dataset, contact_sheet
    augment     ImageAugmentation: OpenVLA's train-time augmentation
    batches     VLADataConfig, SampleBuilder, VLAMixtureDataset, VLAFrameDataset, PaddedCollator
    prompt, processor, transforms, tokenizer: the prompt, the processor and its image transform, tokenizers

See docs/data.md.
"""
