"""An engine's output to the files we serve: video.mp4, thumbnail.webp, spritesheet.jpg."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from wanserve.engines.base import EngineOutput, FrameStream, VideoFile
from wanserve.errors import EngineError
from wanserve.render.encoder import Mp4Writer, frame_rate
from wanserve.render.preview import PreviewSampler, decode_frames, previews_from_file
from wanserve.render.watermark import apply_watermark
from wanserve.storage.layout import OUTPUT_FILES

logger = logging.getLogger(__name__)

VIDEO_NAME = OUTPUT_FILES["video"].name
THUMBNAIL_NAME = OUTPUT_FILES["thumbnail"].name
SPRITESHEET_NAME = OUTPUT_FILES["spritesheet"].name


@dataclass(frozen=True)
class RenderedVideo:
    """The served files of one job and what they hold."""

    video_path: Path
    thumbnail_path: Path
    spritesheet_path: Path
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    has_audio: bool


def render_frame_stream(
    stream: FrameStream,
    *,
    out_dir: Path,
    audio_path: Path | None,
    watermark: bool,
    duration: float,
    preset: str = "veryfast",
    on_frame: Callable[[int], None] | None = None,
) -> RenderedVideo:
    """Encode `stream` frame by frame into out_dir/video.mp4 and its previews.

    `on_frame(index)` runs after frame `index` (0-based) went to the encoder; whatever it
    raises (e.g. `JobCancelled`) propagates, and no video.mp4 is left behind. The audio
    track, when `audio_path` is given, is cut or padded to the video's own duration.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = iter(stream.frames)
    try:
        first = next(frames, None)
        if first is None:
            raise EngineError("the engine produced no frames")
        height, width = first.shape[:2]
        sampler = PreviewSampler(stream.frame_count)
        partial = out_dir / f".{VIDEO_NAME}.partial"
        with Mp4Writer(
            partial,
            width=width,
            height=height,
            fps=stream.fps,
            audio_path=audio_path,
            preset=preset,
        ) as writer:
            for index, rgb in enumerate(itertools.chain([first], frames)):
                marked = apply_watermark(rgb) if watermark else rgb
                writer.write(marked)
                sampler.offer(index, marked)
                if on_frame is not None:
                    on_frame(index)
    finally:
        _close_iterator(frames)
    _check_length(writer, stream, duration)
    video_path = out_dir / VIDEO_NAME
    os.replace(partial, video_path)
    sampler.save(out_dir / THUMBNAIL_NAME, out_dir / SPRITESHEET_NAME)
    return RenderedVideo(
        video_path=video_path,
        thumbnail_path=out_dir / THUMBNAIL_NAME,
        spritesheet_path=out_dir / SPRITESHEET_NAME,
        width=width,
        height=height,
        fps=float(writer.rate),
        frame_count=writer.frame_count,
        duration=writer.duration,
        has_audio=audio_path is not None,
    )


def render_output(
    output: EngineOutput,
    *,
    out_dir: Path,
    audio_path: Path | None,
    watermark: bool,
    duration: float,
    preset: str = "veryfast",
    on_progress: Callable[[float], None] | None = None,
) -> RenderedVideo:
    """Whatever an engine returned, as served files; `on_progress` gets the job's share done.

    A frame stream's share starts at its `progress_start` and grows with each encoded
    frame; `on_progress` may raise (e.g. `JobCancelled`) to stop the encode.
    """
    if isinstance(output, VideoFile):
        return render_video_file(output, out_dir=out_dir)
    stream = output

    def on_frame(index: int) -> None:
        if on_progress is not None:
            done = (index + 1) / max(1, stream.frame_count)
            on_progress(stream.progress_start + (1 - stream.progress_start) * done)

    return render_frame_stream(
        stream,
        out_dir=out_dir,
        audio_path=audio_path,
        watermark=watermark,
        duration=duration,
        preset=preset,
        on_frame=on_frame,
    )


def _close_iterator(frames: Iterator[np.ndarray]) -> None:
    """Close a generator early so an engine's `finally` blocks free its resources."""
    close = getattr(frames, "close", None)
    if close is not None:
        close()


def _check_length(writer: Mp4Writer, stream: FrameStream, duration: float) -> None:
    if writer.frame_count != stream.frame_count:
        logger.warning(
            "engine announced %d frames but produced %d", stream.frame_count, writer.frame_count
        )
    if abs(writer.duration - duration) > 1 / writer.rate:
        logger.warning(
            "video lasts %.3f s, %.3f s were asked for (more than one frame off)",
            writer.duration,
            duration,
        )


@dataclass(frozen=True)
class _Probe:
    width: int
    height: int
    fps: float
    frame_count: int
    has_audio: bool
    servable: bool  # H.264 yuv420p in MP4 with AAC or no audio: no re-encode needed


def probe(path: Path) -> _Probe:
    """What a finished video file holds, and whether we can serve it without re-encoding."""
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            rate = video.average_rate or video.guessed_rate or 0
            frames = video.frames
            if not frames:  # some containers (MKV, WebM) do not count frames
                seconds = (
                    video.duration * video.time_base
                    if video.duration and video.time_base
                    else (container.duration or 0) / av.time_base
                )
                frames = round(seconds * rate)
            servable = (
                "mp4" in container.format.name.split(",")
                and video.codec_context.name == "h264"
                and video.codec_context.pix_fmt == "yuv420p"
                and (audio is None or audio.codec_context.name == "aac")
            )
            return _Probe(
                width=video.codec_context.width,
                height=video.codec_context.height,
                fps=float(rate),
                frame_count=int(frames),
                has_audio=audio is not None,
                servable=servable,
            )
    except (av.FFmpegError, IndexError) as exc:
        raise EngineError("the engine's video cannot be read") from exc


def render_video_file(video: VideoFile, *, out_dir: Path) -> RenderedVideo:
    """Serve a finished video: moved (remuxed for faststart) or, if need be, re-encoded."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe(video.path)
    if info.fps <= 0:
        raise EngineError("the engine's video has no frame rate")
    video_path = out_dir / VIDEO_NAME
    thumbnail_path, spritesheet_path = out_dir / THUMBNAIL_NAME, out_dir / SPRITESHEET_NAME
    if info.servable:
        _place_faststart(video.path, video_path)
        frame_count = previews_from_file(
            video_path, info.frame_count, thumbnail_path, spritesheet_path
        )
        fps = float(frame_rate(info.fps))
    else:
        logger.info("re-encoding the engine's video to H.264/AAC MP4")
        stream = FrameStream(
            fps=info.fps,
            frame_count=info.frame_count,
            frames=(rgb for rgb in decode_frames(video.path) if rgb is not None),
        )
        rendered = render_frame_stream(
            stream,
            out_dir=out_dir,
            audio_path=video.path if info.has_audio else None,
            watermark=False,
            duration=info.frame_count / info.fps,
        )
        frame_count, fps = rendered.frame_count, rendered.fps
    return RenderedVideo(
        video_path=video_path,
        thumbnail_path=thumbnail_path,
        spritesheet_path=spritesheet_path,
        width=info.width,
        height=info.height,
        fps=fps,
        frame_count=frame_count,
        duration=frame_count / fps,
        has_audio=info.has_audio,
    )


def _place_faststart(source: Path, target: Path) -> None:
    """Put `source` at `target` with its index first: moved as is, or remuxed if needed."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        if is_faststart(source):
            shutil.move(source, partial)
        else:
            _remux(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def is_faststart(path: Path) -> bool:
    """Whether the top-level 'moov' box comes before 'mdat' (playback can start at once)."""
    with path.open("rb") as file:
        while header := file.read(8):
            if len(header) < 8:
                return False
            size, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if size == 1:  # 64-bit size follows the type
                size = int.from_bytes(file.read(8), "big") - 8
            elif size == 0:  # box runs to the end of the file
                return False
            file.seek(size - 8, os.SEEK_CUR)
    return False


def _remux(source: Path, target: Path) -> None:
    """Copy the streams into a new MP4 with +faststart, without re-encoding."""
    with (
        av.open(str(source)) as src,
        av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as dst,
    ):
        inputs = [s for s in src.streams if s.type in ("video", "audio")]
        outputs = {s.index: dst.add_stream_from_template(s) for s in inputs}
        for packet in src.demux(inputs):
            if packet.dts is None:  # demuxer's flush packet
                continue
            packet.stream = outputs[packet.stream.index]
            dst.mux(packet)
