"""Streaming H.264/AAC MP4 writer on PyAV: one frame in, one frame encoded, nothing kept."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame

from wanserve.errors import EngineError

AUDIO_RATE = 48_000
AUDIO_FRAME = 1024  # AAC's frame size: every frame but the last must have exactly this many
AUDIO_BITRATE = 160_000
DEFAULT_CRF = 20
X264_PRESETS = frozenset(
    {
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
        "placebo",
    }
)


def frame_rate(fps: float) -> Fraction:
    """`fps` as an exact fraction (30000/1001 stays 30000/1001, 24.0 becomes 24)."""
    if fps <= 0:
        raise EngineError(f"frame rate must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


class AudioSource:
    """Decoded audio as 48 kHz stereo planar float, handed out up to a sample count.

    Past the end of the file it hands out silence, so the track can be padded to any
    length; what is never asked for is simply not read, which cuts it.
    """

    def __init__(self, path: Path):
        try:
            self._container = av.open(str(path))
            self._stream = self._container.streams.audio[0]
        except (av.FFmpegError, IndexError) as exc:
            raise EngineError("the driving audio cannot be decoded") from exc
        self._frames = self._container.decode(self._stream)
        self._resampler: av.AudioResampler | None = av.AudioResampler(
            format="fltp", layout="stereo", rate=AUDIO_RATE
        )
        self._pending = np.zeros((2, 0), dtype=np.float32)

    def read(self, count: int) -> np.ndarray:
        """The next `count` samples as a (2, count) float32 array, silence past the end."""
        while self._pending.shape[1] < count and self._resampler is not None:
            self._pull()
        if self._pending.shape[1] < count:
            silence = np.zeros((2, count - self._pending.shape[1]), dtype=np.float32)
            self._pending = np.concatenate([self._pending, silence], axis=1)
        chunk, self._pending = self._pending[:, :count], self._pending[:, count:]
        return chunk

    def close(self) -> None:
        """Release the decoder."""
        self._container.close()

    def _pull(self) -> None:
        assert self._resampler is not None
        try:
            decoded = next(self._frames, None)
            frames = self._resampler.resample(decoded)
        except av.FFmpegError as exc:
            raise EngineError("the driving audio cannot be decoded") from exc
        if decoded is None:
            self._resampler = None  # flushed: the source is exhausted
        arrays = [self._pending, *(frame.to_ndarray() for frame in frames)]
        self._pending = np.concatenate(arrays, axis=1).astype(np.float32, copy=False)


class Mp4Writer:
    """Writes RGB frames (and optionally an audio file) to an H.264 yuv420p MP4.

    Use as a context manager: a clean exit finishes the file, an exception closes the
    container and deletes the partial file before propagating.
    """

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: float,
        audio_path: Path | None = None,
        preset: str = "veryfast",
        crf: int = DEFAULT_CRF,
    ):
        if preset not in X264_PRESETS:
            raise EngineError(f"unknown x264 preset {preset!r} (WANSERVE_ENCODER_PRESET)")
        if width % 2 or height % 2:
            raise EngineError(f"yuv420p needs even sides, got {width}x{height}")
        self.path = path
        self.width, self.height = width, height
        self.rate = frame_rate(fps)
        self.frame_count = 0
        self._audio_written = 0
        self._audio = AudioSource(audio_path) if audio_path is not None else None
        try:
            self._container = av.open(
                str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
        except BaseException:
            self._close_audio()
            raise
        try:
            self._video = self._add_video_stream(preset, crf)
            self._audio_stream = self._add_audio_stream() if self._audio else None
        except BaseException:
            self.abort()
            raise

    def _add_video_stream(self, preset: str, crf: int) -> av.VideoStream:
        stream = self._container.add_stream(
            "libx264", rate=self.rate, options={"preset": preset, "crf": str(crf)}
        )
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        # One tick per frame: pts are frame indices and the duration is exact.
        stream.time_base = 1 / self.rate
        stream.codec_context.time_base = 1 / self.rate
        stream.codec_context.thread_count = 0  # let libx264 pick its thread count
        # Tag what we convert to, so players do not guess between BT.601 and BT.709.
        stream.codec_context.colorspace = av.video.reformatter.Colorspace.ITU709
        stream.codec_context.color_range = av.video.reformatter.ColorRange.MPEG
        return stream

    def _add_audio_stream(self) -> av.AudioStream:
        stream = self._container.add_stream("aac", rate=AUDIO_RATE)
        stream.layout = "stereo"
        stream.format = "fltp"
        stream.bit_rate = AUDIO_BITRATE
        stream.time_base = Fraction(1, AUDIO_RATE)
        return stream

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def write(self, rgb: np.ndarray) -> None:
        """Encode one RGB uint8 (height, width, 3) frame, then the audio up to its end."""
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise EngineError(
                f"frame {self.frame_count} is {rgb.shape} {rgb.dtype}, "
                f"expected ({self.height}, {self.width}, 3) uint8"
            )
        frame = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
        )
        frame.pts = self.frame_count
        self._container.mux(self._video.encode(frame))
        self.frame_count += 1
        self._write_audio(final=False)

    def _audio_target(self) -> int:
        """Audio samples that cover the video written so far."""
        return round(self.frame_count / self.rate * AUDIO_RATE)

    def _write_audio(self, *, final: bool) -> None:
        if self._audio is None or self._audio_stream is None:
            return
        missing = self._audio_target() - self._audio_written
        if not final:
            missing -= missing % AUDIO_FRAME  # a short frame is only allowed last
        for start in range(0, missing, AUDIO_FRAME):
            samples = self._audio.read(min(AUDIO_FRAME, missing - start))
            frame = AudioFrame.from_ndarray(
                np.ascontiguousarray(samples), format="fltp", layout="stereo"
            )
            frame.sample_rate = AUDIO_RATE
            frame.pts = self._audio_written
            frame.time_base = Fraction(1, AUDIO_RATE)
            self._audio_written += samples.shape[1]
            self._container.mux(self._audio_stream.encode(frame))

    def finish(self) -> None:
        """Flush the encoders and close the file (the faststart pass happens here)."""
        if self.frame_count == 0:
            self.abort()
            raise EngineError("the engine produced no frames")
        try:
            self._write_audio(final=True)
            self._container.mux(self._video.encode(None))
            if self._audio_stream is not None:
                self._container.mux(self._audio_stream.encode(None))
            self._container.close()
        except BaseException:
            self.abort()
            raise
        finally:
            self._close_audio()

    def abort(self) -> None:
        """Close everything and delete the partial file."""
        with contextlib.suppress(av.FFmpegError):
            self._container.close()
        self._close_audio()
        self.path.unlink(missing_ok=True)

    def _close_audio(self) -> None:
        if self._audio is not None:
            self._audio.close()
            self._audio = None

    @property
    def duration(self) -> float:
        """Seconds of video written so far: frame_count / fps."""
        return float(self.frame_count / self.rate)
