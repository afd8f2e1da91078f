"""Datasets: inspect one, convert between formats, compute dataset_statistics.json.

    vlaforge data inspect data/mw-demo                               # LeRobot v3, HDF5 or RLDS (detected)
    vlaforge data inspect demos.hdf5 --task "lift the cube" --sheet lift.png
    vlaforge data convert demos.hdf5 out/lift --task "lift the cube"         # HDF5 -> LeRobot v3
    vlaforge data convert libero_spatial/ out/libero --flip-images --resize 224
    vlaforge data convert bridge_orig/1.0.0 out/bridge --resize 224          # RLDS -> LeRobot v3 (vlaforge[rlds])
    vlaforge data stats data/mw-demo --out runs/mw                           # writes dataset_statistics.json

`inspect` prints episode and frame counts, fps, cameras, action ranges, the fraction of idle steps and the
statistics, and draws a contact sheet PNG (frames next to action plots). `convert` writes a LeRobotDataset
v3.0 that LeRobot opens; an interrupted conversion continues with --resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from vlaforge.cli.subcommands import dispatch


@dataclass
class SourceArgs:
    """How to read the input dataset."""

    format: Literal["auto", "lerobot", "hdf5", "rlds"] = "auto"  # input format; auto = detect from the files
    name: str | None = None  # dataset name (keys the statistics); default the directory / file / TFDS name
    task: str | None = None  # instruction for every episode (HDF5 / RLDS data without language)
    flip_images: bool = False  # HDF5: turn frames by 180 degrees (LIBERO renders upside down)
    state_keys: tuple[str, ...] | None = None  # HDF5: datasets concatenated into the state (default: states)
    split: str = "train"  # RLDS: the TFDS split


def open_source(path: str, args: SourceArgs) -> Any:
    """The input dataset, with the options that apply to its format."""
    from vlaforge.data.sources import detect_format, open_dataset

    kind = detect_format(path) if args.format == "auto" else args.format
    options: dict[str, Any] = {}
    if kind == "hdf5":
        options = {"task": args.task, "flip_images": args.flip_images}
        if args.state_keys is not None:
            options["state_keys"] = args.state_keys
    elif kind == "rlds":
        options = {"split": args.split, "task": args.task}
    elif args.task or args.flip_images or args.state_keys:
        raise ValueError("--task, --flip-images and --state-keys apply to HDF5 (and --task to RLDS) inputs only")
    return open_dataset(path, format=kind, name=args.name, **options)


@dataclass
class InspectArgs:
    """Print a dataset's counts, ranges, idle steps and statistics; draw a contact sheet."""

    path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="PATH")]  # dataset directory or .hdf5 file
    source: Annotated[SourceArgs, tyro.conf.OmitArgPrefixes] = field(default_factory=SourceArgs)
    sheet: str | None = "auto"  # contact sheet PNG; auto = ./<name>-contact-sheet.png, None = no sheet
    episodes: int = 4  # episodes (rows) on the contact sheet
    frames: int = 6  # frames per episode on the contact sheet
    camera: str | None = None  # camera shown on the sheet (default the first)
    idle_threshold: float = 1e-3  # a step is idle when its movement dims are below this and the gripper holds
    json: bool = False  # print one JSON object instead of text


@dataclass
class ConvertArgs:
    """Convert a dataset (HDF5, RLDS or LeRobot) into a LeRobotDataset v3.0."""

    input: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="INPUT")]  # dataset directory or .hdf5 file
    output: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUTPUT")]  # new LeRobot dataset directory
    source: Annotated[SourceArgs, tyro.conf.OmitArgPrefixes] = field(default_factory=SourceArgs)
    cameras: tuple[str, ...] | None = None  # cameras to keep (default all)
    resize: int | None = None  # resize frames to N x N (OpenVLA trains on 224); default keep the size
    codec: str = "libsvtav1"  # video encoder: libsvtav1 (AV1, LeRobot's default) or libx264
    crf: int = 30  # video quality: lower = better and bigger
    robot_type: str = "unknown"  # robot name stored in meta/info.json
    resume: bool = False  # continue an interrupted conversion into OUTPUT


@dataclass
class StatsArgs:
    """Compute a dataset's action/state statistics into dataset_statistics.json (OpenVLA's schema)."""

    path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="PATH")]  # dataset directory or .hdf5 file
    source: Annotated[SourceArgs, tyro.conf.OmitArgPrefixes] = field(default_factory=SourceArgs)
    out: str = "."  # directory of dataset_statistics.json; other datasets' entries in it are kept
    action_mask: tuple[bool, ...] | None = None  # normalized action dims (default: gripper of 7-D actions raw)


def inspect_main(argv: list[str]) -> int:
    """`vlaforge data inspect`."""
    from vlaforge.data.inspect import contact_sheet, format_report, inspect_dataset

    args = tyro.cli(InspectArgs, args=argv, prog="vlaforge data inspect", description=__doc__)
    dataset = open_source(args.path, args.source)
    report = inspect_dataset(dataset, args.idle_threshold, progress=not args.json)
    sheet = None
    if args.sheet not in (None, "", "None"):
        target = Path(f"{dataset.name}-contact-sheet.png") if args.sheet == "auto" else Path(args.sheet)
        sheet = contact_sheet(dataset, target, args.episodes, args.frames, args.camera)
    if args.json:
        print(json.dumps({**report.to_dict(), "contact_sheet": str(sheet) if sheet else None}, indent=2))
    else:
        print(format_report(report))
        if sheet is not None:
            print(f"\ncontact sheet: {sheet}")
    return 0


def convert_main(argv: list[str]) -> int:
    """`vlaforge data convert`."""
    from vlaforge.data.convert import convert_to_lerobot
    from vlaforge.data.video import VideoEncoding

    args = tyro.cli(ConvertArgs, args=argv, prog="vlaforge data convert", description=__doc__)
    dataset = open_source(args.input, args.source)
    encoding = VideoEncoding(codec=args.codec, crf=args.crf)
    out = convert_to_lerobot(dataset, args.output, args.cameras, args.resize, encoding, args.robot_type, args.resume)
    print(f"wrote {out.num_episodes} episodes, {out.num_frames} frames of {dataset.name!r} to {args.output}")
    return 0


def stats_main(argv: list[str]) -> int:
    """`vlaforge data stats`."""
    from vlaforge.constants import STATS_NAME
    from vlaforge.data import stats

    args = tyro.cli(StatsArgs, args=argv, prog="vlaforge data stats", description=__doc__)
    dataset = open_source(args.path, args.source)
    existing = Path(args.out) / STATS_NAME
    statistics = stats.load_dataset_statistics(existing) if existing.is_file() else {}
    computed = stats.compute_dataset_stats(dataset)
    statistics[dataset.name] = stats.openvla_entry(computed, dataset.num_episodes, args.action_mask)
    path = stats.save_dataset_statistics(statistics, args.out)
    print(f"statistics of {dataset.name!r} ({dataset.num_episodes} episodes) written to {path}")
    return 0


SUBCOMMANDS = {"inspect": inspect_main, "convert": convert_main, "stats": stats_main}


def main(argv: list[str]) -> int:
    """Entry point of `vlaforge data`: dispatches to `inspect`, `convert` or `stats`."""
    return dispatch("vlaforge data", __doc__, SUBCOMMANDS, argv, "subcommand")
