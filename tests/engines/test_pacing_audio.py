"""Timing of the keyframe motion: eased ends, audio loudness pacing, envelope decoding."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from wanserve.engines.pacing import loudness_envelope, paced_times
from wanserve.errors import EngineError

FPS = 24
RATE = 16_000


def _wav(path: Path, loudness: list[float], seconds_each: float = 1.0) -> Path:
    """A 220 Hz tone whose amplitude steps through `loudness`, one step per second."""
    chunk = int(RATE * seconds_each)
    tone = np.sin(2 * np.pi * 220 * np.arange(chunk) / RATE)
    samples = np.concatenate([level * tone for level in loudness])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("frame_count", [2, 24, 120, 360])
def test_eased_times_start_at_zero_end_at_one_and_never_go_back(frame_count: int) -> None:
    times = paced_times(frame_count)
    assert times[0] == 0.0 and times[-1] == 1.0
    assert np.all(np.diff(times) >= 0)


def test_eased_times_are_slow_at_both_ends() -> None:
    steps = np.diff(paced_times(48))
    assert steps[0] < steps[len(steps) // 2] / 5
    assert steps[-1] < steps[len(steps) // 2] / 5
    assert np.allclose(steps, steps[::-1])


def test_envelope_follows_loud_and_quiet_parts(tmp_path: Path) -> None:
    path = _wav(tmp_path / "steps.wav", [0.05, 0.8, 0.05, 0.8])
    envelope = loudness_envelope(path, FPS, 4 * FPS)
    assert envelope.shape == (4 * FPS,)
    assert envelope.max() == pytest.approx(1.0)
    quiet, loud = envelope[6:18].mean(), envelope[30:42].mean()
    assert loud > 5 * quiet


def test_motion_speeds_up_where_the_audio_is_loud(tmp_path: Path) -> None:
    path = _wav(tmp_path / "steps.wav", [0.05, 0.8, 0.05, 0.8, 0.05])
    frames = 5 * FPS
    envelope = loudness_envelope(path, FPS, frames)
    times = paced_times(frames, envelope)
    assert times[0] == 0.0 and times[-1] == 1.0
    assert np.all(np.diff(times) >= 0)
    # Pace relative to the plain ease isolates the audio's effect from the ease's bell.
    relative = np.diff(times) / np.maximum(np.diff(paced_times(frames)), 1e-12)
    level = (envelope[:-1] + envelope[1:]) / 2
    assert np.corrcoef(relative[5:-5], level[5:-5])[0, 1] > 0.9
    assert np.corrcoef(np.diff(times), level)[0, 1] > 0.2


def test_audio_shorter_than_the_video_is_silent_after_its_end(tmp_path: Path) -> None:
    path = _wav(tmp_path / "short.wav", [0.5])
    envelope = loudness_envelope(path, FPS, 3 * FPS)
    assert envelope[:18].min() > 0.5
    assert np.all(envelope[2 * FPS :] < 0.01)


def test_silence_gives_a_flat_envelope_and_plain_easing(tmp_path: Path) -> None:
    path = _wav(tmp_path / "silence.wav", [0.0, 0.0])
    envelope = loudness_envelope(path, FPS, 2 * FPS)
    assert np.all(envelope == 0)
    assert np.allclose(paced_times(2 * FPS, envelope), paced_times(2 * FPS))


def test_same_audio_gives_the_same_times(tmp_path: Path) -> None:
    path = _wav(tmp_path / "steps.wav", [0.1, 0.9, 0.3])
    first = paced_times(72, loudness_envelope(path, FPS, 72))
    assert np.array_equal(first, paced_times(72, loudness_envelope(path, FPS, 72)))


def test_undecodable_audio_is_an_engine_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(b"RIFF....WAVEfmt not really audio")
    with pytest.raises(EngineError):
        loudness_envelope(path, FPS, 24)
