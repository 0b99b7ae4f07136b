"""Fixtures for the render tests: lazy frame streams and sine audio files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from render_samples import gradient_frames, write_sine

from wanserve.engines.base import FrameStream


@pytest.fixture
def make_stream() -> Callable[..., FrameStream]:
    """Build a lazy FrameStream of `seconds` of gradient at `fps`."""

    def make(seconds: float, width: int = 320, height: int = 240, fps: float = 24) -> FrameStream:
        count = round(seconds * fps)
        return FrameStream(fps=fps, frame_count=count, frames=gradient_frames(count, width, height))

    return make


@pytest.fixture
def make_audio(tmp_path: Path) -> Callable[..., Path]:
    """Write a sine audio file of `seconds` under tmp_path; `mp3=True` for MP3 instead of WAV."""

    def make(seconds: float, *, mp3: bool = False) -> Path:
        if mp3:
            return write_sine(tmp_path / f"sine-{seconds}.mp3", seconds, codec="libmp3lame")
        return write_sine(tmp_path / f"sine-{seconds}.wav", seconds)

    return make
