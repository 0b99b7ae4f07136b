"""Video clips (`first_clip`): checking the bytes, and reading frames back for continuation.

As for images and audio, the container is decided by magic bytes alone and the demuxer is
told which one it is, so FFmpeg never guesses a format. The whole clip is decoded once at
intake: a clip that is truncated or not really a video is refused before the job exists.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
from PIL import Image

from wanserve.errors import EngineError, MediaError
from wanserve.media.probe import check_dimensions, check_size
from wanserve.render.geometry import center_crop_box

MIN_CLIP_SECONDS = 2.0
MAX_CLIP_SECONDS = 10.0
# Content type -> FFmpeg demuxer. MP4 and MOV share the ISO/QuickTime demuxer.
_CLIP_FORMATS = {"video/mp4": "mov", "video/quicktime": "mov", "video/webm": "matroska"}
_CODECS = {"h264": "H.264", "hevc": "H.265", "vp9": "VP9"}
# Top-level QuickTime atoms a .mov may start with instead of `ftyp`.
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


@dataclass(frozen=True)
class ClipInfo:
    """A checked clip: container, size as displayed, length, and whether it has sound."""

    content_type: str
    codec: str
    width: int
    height: int
    duration: float
    frame_count: int
    fps: float
    has_audio: bool


def sniff_clip_type(data: bytes) -> str | None:
    """The video container the magic bytes announce (MP4, MOV, WebM), or None."""
    head = data[:12]
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: Matroska / WebM
        return "video/webm"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:12] == b"qt  " else "video/mp4"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "video/quicktime"
    return None


def probe_clip(data: bytes, *, param: str, max_bytes: int) -> ClipInfo:
    """Check `data` is a whole H.264/H.265/VP9 MP4, MOV or WebM clip of 2..10 s."""
    check_size(data, max_bytes, param)
    content_type = sniff_clip_type(data)
    if content_type is None:
        raise MediaError("the clip is not an MP4, MOV or WebM video", param=param)
    try:
        with av.open(io.BytesIO(data), mode="r", format=_CLIP_FORMATS[content_type]) as container:
            return _probe_container(container, content_type, param)
    except av.error.FFmpegError as exc:
        raise MediaError("the clip could not be decoded as a video", param=param) from exc


def _probe_container(
    container: av.container.InputContainer, content_type: str, param: str
) -> ClipInfo:
    if not container.streams.video:
        raise MediaError("the clip has no video stream", param=param)
    stream = container.streams.video[0]
    codec = stream.codec_context.name
    if codec not in _CODECS:
        raise MediaError(
            f"the clip's video is {codec}; it must be H.264, H.265 or VP9", param=param
        )
    check_dimensions(stream.codec_context.width, stream.codec_context.height, param, "clip")
    # 1. The declared length refuses a long clip before anything is decoded.
    declared = _declared_seconds(container, stream)
    if declared is not None:
        _check_length(declared, param)
    # 2. Every frame decoded once: the length that counts is the last frame's end.
    count, end, width, height = 0, 0.0, 0, 0
    for frame in container.decode(stream):
        count += 1
        width, height = frame.width, frame.height
        if frame.time is not None:
            end = max(end, frame.time + _frame_seconds(stream))
        if end > MAX_CLIP_SECONDS + 1:
            break
    if count == 0:
        raise MediaError("no video frame could be decoded from the clip", param=param)
    duration = end if end > 0 else count * _frame_seconds(stream)
    _check_length(duration, param)
    check_dimensions(width, height, param, "clip")
    return ClipInfo(
        content_type=content_type,
        codec=_CODECS[codec],
        width=width,
        height=height,
        duration=round(duration, 4),
        frame_count=count,
        fps=round(count / duration, 4),
        has_audio=bool(container.streams.audio),
    )


def _frame_seconds(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate
    return float(1 / rate) if rate else 1 / 30


def _declared_seconds(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _check_length(seconds: float, param: str) -> None:
    # Half a frame of slack: a "2 s" clip whose last frame ends a hair early is 2 s.
    if not MIN_CLIP_SECONDS - 0.02 <= seconds <= MAX_CLIP_SECONDS + 0.02:
        raise MediaError(
            f"the clip is {seconds:.1f} s long; it must be between "
            f"{MIN_CLIP_SECONDS:g} and {MAX_CLIP_SECONDS:g} s",
            param=param,
        )


def _decoded(path: Path) -> Iterator[av.VideoFrame]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            yield from container.decode(stream)
    except (av.FFmpegError, IndexError) as exc:
        raise EngineError("the first clip cannot be decoded") from exc


def fit(frame: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """A clip frame at `size`, centre-cropped to its aspect the way input frames are."""
    box = center_crop_box(frame.width, frame.height, *size)
    return np.asarray(frame.resize(size, Image.Resampling.LANCZOS, box=box))


def count_frames(path: Path) -> int:
    """How many video frames the clip holds (from its packets: nothing is decoded)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, IndexError) as exc:
        raise EngineError("the first clip cannot be read") from exc


def tail_frames(path: Path, count: int) -> list[Image.Image]:
    """The clip's last `count` frames (fewer for a shorter clip), oldest first."""
    tail: deque[av.VideoFrame] = deque(maxlen=count)
    for frame in _decoded(path):
        tail.append(frame)
    if not tail:
        raise EngineError("the first clip has no frames")
    return [frame.to_image() for frame in tail]


def resampled_frames(path: Path, size: tuple[int, int], count: int) -> Iterator[np.ndarray]:
    """The clip as `count` frames at `size`: its first and last frame kept, the rest
    picked evenly between, so the clip plays at the output's frame rate for its length."""
    total = count_frames(path)
    wanted = iter(
        [round(i * (total - 1) / max(1, count - 1)) for i in range(count)] if total else []
    )
    target = next(wanted, None)
    for index, frame in enumerate(_decoded(path)):
        if target is None:
            break
        if index < target:
            continue
        fitted = fit(frame.to_image(), size)
        while target == index:
            yield fitted
            target = next(wanted, None)


def save_last_frame(path: Path, target: Path) -> Path:
    """Write the clip's last frame to `target` as PNG (what engines start a continuation on)."""
    tail_frames(path, 1)[0].save(target, format="PNG")
    return target


def has_audio(path: Path) -> bool:
    """Whether the clip carries a sound track."""
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.FFmpegError as exc:
        raise EngineError("the first clip cannot be read") from exc
