"""MP4 video on PyAV: encode frames, join files without re-encoding, decode frames by timestamp.

LeRobotDataset v3 keeps the frames of many episodes of one camera in one MP4; an episode is the time range
`[from_timestamp, to_timestamp)` of that file. Frame `k` of a file sits at `k / fps` seconds, so frame `t` of an
episode is found at `from_timestamp + t / fps`. Decoding seeks to the keyframe before the first wanted frame
and decodes forward; with a keyframe every 2 frames (LeRobot's `g=2`) a random frame costs ~2 ms, and
sequential decoding of a whole episode runs at ~2,000 frames/s at 224 px on one core (AV1 via dav1d).

Every failure raises `VideoError` naming the file (and, through the callers, the episode).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vlaforge.data.episode import DataError

# SVT-AV1 prints a banner per encoded file at its default log level; keep errors only (unless the user set it).
os.environ.setdefault("SVT_LOG", "1")

# Codec names as LeRobot writes them into info.json ("video.codec"), keyed by PyAV encoder name.
_CODEC_NAMES = {"libsvtav1": "av1", "libaom-av1": "av1", "libx264": "h264", "h264": "h264", "mpeg4": "mpeg4"}


class VideoError(DataError):
    """A video file is missing, unreadable, truncated or does not hold the frames its metadata promises."""


@dataclass
class VideoEncoding:
    """How camera streams are encoded. The defaults are LeRobot's (AV1, crf 30, keyframe every 2 frames)."""

    codec: str = "libsvtav1"  # PyAV encoder: libsvtav1 (AV1, LeRobot's default), libx264 (H.264) or mpeg4
    pix_fmt: str = "yuv420p"  # pixel format of the stream; yuv420p plays everywhere
    crf: int = 30  # constant rate factor: lower = better quality, bigger files
    gop: int = 2  # keyframe interval in frames: small = fast random seeking
    preset: str | None = None  # encoder speed preset; None = "12" for SVT-AV1, "veryfast" for x264
    extra_options: dict[str, str] = field(default_factory=dict)  # further encoder options

    def options(self) -> dict[str, str]:
        """The encoder options PyAV passes to FFmpeg."""
        opts = {"g": str(self.gop)}
        if self.codec != "mpeg4":
            opts["crf"] = str(self.crf)
        preset = self.preset or {"libsvtav1": "12", "libx264": "veryfast"}.get(self.codec)
        if preset is not None:
            opts["preset"] = preset
        if self.codec == "libx264":
            opts["bf"] = "0"  # no B-frames: episodes can then be joined by copying packets
        opts.update(self.extra_options)
        return opts

    def info(self, fps: float, height: int, width: int) -> dict[str, Any]:
        """The `info` entry of a video feature in LeRobot's `meta/info.json`."""
        return {
            "video.height": height,
            "video.width": width,
            "video.codec": _CODEC_NAMES.get(self.codec, self.codec),
            "video.pix_fmt": self.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "video.g": self.gop,
            "video.crf": self.crf,
            "has_audio": False,
        }


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def check_frames(frames: np.ndarray, where: str) -> None:
    """Raises a DataError unless `frames` is `[T, H, W, 3]` uint8 with even H and W (yuv420p needs them)."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise DataError(f"{where}: video frames must be a uint8 numpy array [T, H, W, 3], got {kind}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise DataError(f"{where}: video frames must have shape [T, H, W, 3], got {list(frames.shape)}")
    if frames.shape[0] == 0:
        raise DataError(f"{where}: no frames to encode")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise DataError(
            f"{where}: frame size {frames.shape[2]}x{frames.shape[1]} is odd; yuv420p video needs even "
            "width and height (crop or resize the images by one pixel)"
        )


def encode_video(path: Path, frames: np.ndarray, fps: float, encoding: VideoEncoding | None = None) -> None:
    """Encodes `[T, H, W, 3]` uint8 RGB frames into a new MP4 file (frame k at k / fps seconds).

    Args:
        path: output file; its parent directory is created.
        frames: the frames, in display order.
        fps: frames per second of the recording.
        encoding: codec settings; LeRobot's defaults when None.
    """
    encoding = encoding or VideoEncoding()
    check_frames(frames, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = _fps_fraction(fps)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoding.codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = encoding.pix_fmt
        stream.options = encoding.options()
        stream.codec_context.time_base = 1 / rate
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder


def _stream_signature(stream: av.video.stream.VideoStream) -> tuple:
    ctx = stream.codec_context
    return ctx.name, ctx.width, ctx.height, ctx.format.name if ctx.format else None, bytes(ctx.extradata or b"")


def concat_segments(
    segments: Sequence[tuple[Path, float, float]], output: Path, fps: float
) -> list[tuple[float, float]]:
    """Joins time ranges of MP4 files that share codec and settings, copying packets (no re-encoding).

    Every range must start on a keyframe; episode boundaries do, since each episode is encoded on its own.

    Args:
        segments: `(file, from_s, to_s)` per piece, e.g. whole files `(path, 0, T / fps)` written by
            `encode_video`, or episodes inside an already joined file.
        output: the joined file.
        fps: frames per second of all inputs.

    Returns:
        `(from_timestamp, to_timestamp)` in seconds of each piece inside the output.

    Raises:
        VideoError: a piece has other codec settings than the first (decode and re-encode instead), or
            holds fewer frames than its time range promises.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    spans: list[tuple[float, float]] = []
    done = 0  # frames written so far
    with av.open(str(output), "w") as out:
        out_stream, signature = None, None
        for path, from_s, to_s in segments:
            with open_video(path) as container:
                stream = container.streams.video[0]
                if out_stream is None:
                    out_stream, signature = out.add_stream_from_template(stream, opaque=True), _stream_signature(stream)
                elif _stream_signature(stream) != signature:
                    raise VideoError(f"{path} was encoded with other settings than {segments[0][0]}; cannot join them")
                first, wanted = round(from_s * fps), round((to_s - from_s) * fps)
                container.seek(round(from_s / stream.time_base), stream=stream, backward=True, any_frame=False)
                shift = round(done / fps / stream.time_base) - round(first / fps / stream.time_base)
                count = 0
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        continue
                    index = round(float(packet.pts * stream.time_base) * fps)
                    if index < first:
                        continue
                    if index >= first + wanted:
                        break
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    packet.stream = out_stream
                    out.mux(packet)
                    count += 1
                if count != wanted:
                    raise VideoError(f"{path}: expected {wanted} frames from {from_s:.3f}s, found {count}")
                spans.append((done / fps, (done + count) / fps))
                done += count
    return spans


def open_video(path: Path) -> av.container.InputContainer:
    """Opens an MP4 for reading; a missing or unreadable file raises VideoError naming it."""
    if not Path(path).is_file():
        raise VideoError(f"video file {path} does not exist")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise VideoError(f"video file {path} cannot be opened (truncated or not an MP4?): {err}") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"video file {path} has no video stream")
    return container


def count_frames(path: Path) -> int:
    """Number of frames the container declares (no decoding)."""
    with open_video(path) as container:
        return int(container.streams.video[0].frames)


class VideoReader:
    """Decodes frames of one MP4 by timestamp, keeping the file open between calls.

    Args:
        path: the MP4 file.
        fps: frames per second; frame k of the file is at k / fps seconds.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = Path(path)
        self.fps = fps
        self._container: av.container.InputContainer | None = None
        self._next_index: int | None = None  # file frame index the decoder will produce next, if known
        self._frames: Any = None

    def _stream(self) -> av.video.stream.VideoStream:
        if self._container is None:
            self._container = open_video(self.path)
        return self._container.streams.video[0]

    def close(self) -> None:
        """Closes the file; the next read opens it again."""
        if self._container is not None:
            self._container.close()
        self._container, self._next_index, self._frames = None, None, None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seek(self, index: int) -> None:
        stream = self._stream()
        target = round(index / self.fps / stream.time_base)
        self._container.seek(target, stream=stream, backward=True, any_frame=False)
        self._frames = self._container.decode(stream)
        self._next_index = None

    def read(self, start_s: float, count: int) -> np.ndarray:
        """`[count, H, W, 3]` uint8: the frames from `start_s` seconds on.

        Reading on from where the previous call stopped does not seek again, so an episode read in order
        costs one seek.
        """
        first = round(start_s * self.fps)
        try:
            if self._next_index != first:
                self._seek(first)
            out = []
            for frame in self._frames:
                index = round(float(frame.pts * frame.time_base) * self.fps)
                if index < first + len(out):
                    continue  # frames between the keyframe and the wanted one
                if index > first + len(out):
                    raise VideoError(f"{self.path}: frame at {(first + len(out)) / self.fps:.3f}s is missing")
                out.append(frame.to_ndarray(format="rgb24"))
                if len(out) == count:
                    break
        except av.error.FFmpegError as err:
            self.close()
            raise VideoError(f"{self.path}: decoding failed near {first / self.fps:.3f}s: {err}") from err
        if len(out) < count:
            self.close()
            raise VideoError(
                f"{self.path}: expected {count} frames from {start_s:.3f}s but the file ends after {len(out)} "
                "(truncated video?)"
            )
        self._next_index = first + count
        return np.stack(out)  # [count, H, W, 3]
