"""Timing of the motion: eased in and out, and paced by the driving audio's loudness.

`paced_times` gives each video frame its time t in [0, 1]: 0 at the first frame, 1 at
the last, never going back. The speed of t is a smoothstep bell (slow start, slow end);
with a loudness envelope it is also scaled by the loudness, so the motion hurries
through loud passages and lingers in quiet ones.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from wanserve.errors import EngineError

SAMPLE_RATE = 16_000  # plenty for a loudness envelope, and cheap to decode into
QUIET_SPEED = 0.25  # relative speed in silence: quiet passages slow the motion, never stop it
SMOOTHING_SECONDS = 0.15  # Gaussian sigma of the envelope: follows words, not single waves


def paced_times(frame_count: int, loudness: np.ndarray | None = None) -> np.ndarray:
    """Per-frame times in [0, 1], eased, sped up where `loudness` (one value a frame) is high."""
    if frame_count < 2:
        return np.zeros(frame_count)
    steps = frame_count - 1
    middle = (np.arange(steps) + 0.5) / steps
    speed = 6.0 * middle * (1.0 - middle)  # derivative of smoothstep 3u^2 - 2u^3
    if loudness is not None:
        level = np.asarray(loudness, dtype=np.float64)[:frame_count]
        level = np.pad(level, (0, frame_count - len(level)))
        speed *= QUIET_SPEED + (level[:-1] + level[1:]) / 2.0
    times = np.concatenate([[0.0], np.cumsum(speed)])
    return times / times[-1]


def loudness_envelope(path: Path, fps: float, frame_count: int) -> np.ndarray:
    """RMS loudness of the audio under each video frame, smoothed, scaled to a peak of 1.

    Frames past the end of the audio are silent (0); an all-silent track gives all zeros.
    """
    samples = _decode_mono(path, round(frame_count * SAMPLE_RATE / fps))
    edges = np.round(np.arange(frame_count + 1) * SAMPLE_RATE / fps).astype(np.int64)
    squares = np.concatenate([[0.0], np.cumsum(samples.astype(np.float64) ** 2)])
    ends = np.minimum(edges, len(samples))
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    rms = np.sqrt((squares[ends[1:]] - squares[ends[:-1]]) / counts)
    smoothed = _smooth(rms, max(1, round(SMOOTHING_SECONDS * fps)))
    peak = smoothed.max(initial=0.0)
    return smoothed / peak if peak > 1e-6 else np.zeros(frame_count)


def _decode_mono(path: Path, limit: int) -> np.ndarray:
    """Up to `limit` samples of the file's first audio stream, mono float32 at SAMPLE_RATE."""
    chunks: list[np.ndarray] = []
    total = 0
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total >= limit:
                    break
    except (av.FFmpegError, IndexError) as exc:
        raise EngineError("the driving audio cannot be decoded") from exc
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)[:limit]


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Gaussian-weighted moving average with edges repeated, so the ends are not damped."""
    radius = 2 * width
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / width) ** 2)
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")
