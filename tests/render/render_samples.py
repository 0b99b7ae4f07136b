"""Synthetic frames and audio for the render tests, all made on the fly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np


def gradient_frame(index: int, width: int, height: int) -> np.ndarray:
    """A smooth diagonal gradient that slides with `index` (easy for H.264, easy to compare)."""
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    red = (x / width * 200 + index * 3) % 256
    green = np.broadcast_to(y / height * 200 + 20, (height, width))
    blue = np.full((height, width), (index * 7) % 200 + 30, dtype=np.float32)
    return np.stack(np.broadcast_arrays(red, green, blue), axis=-1).astype(np.uint8)


def gradient_frames(count: int, width: int, height: int) -> Iterator[np.ndarray]:
    """`count` gradient frames, one at a time."""
    for index in range(count):
        yield gradient_frame(index, width, height)


def write_sine(path: Path, seconds: float, *, codec: str = "pcm_s16le", rate: int = 44_100) -> Path:
    """A mono 440 Hz sine of `seconds`, encoded with `codec` (pcm_s16le → WAV, libmp3lame → MP3)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        sample_format = "s16" if codec == "pcm_s16le" else stream.codec_context.format.name
        total = round(seconds * rate)
        chunk = 1152
        for start in range(0, total, chunk):
            t = np.arange(start, min(total, start + chunk)) / rate
            wave = 0.5 * np.sin(2 * np.pi * 440 * t)
            data = _samples(wave, sample_format)[None, :]
            frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout="mono")
            frame.sample_rate = rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _samples(wave: np.ndarray, sample_format: str) -> np.ndarray:
    """`wave` in [-1, 1] as the array type PyAV expects for `sample_format`."""
    if sample_format.startswith("s16"):
        return (wave * 32767).astype(np.int16)
    if sample_format.startswith("s32"):
        return (wave * 2147483647).astype(np.int32)
    return wave.astype(np.float32)
