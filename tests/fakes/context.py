"""An in-test `EngineContext` and request builder for engine tests."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from wanserve.engines.base import GenerationRequest, MediaInput
from wanserve.errors import JobCancelled


@dataclass
class FakeContext:
    """Records progress and state; `check` runs on every cancel check (to cancel or crash)."""

    work_dir: Path
    saved: dict[str, Any] = field(default_factory=dict)
    progress: list[float] = field(default_factory=list)
    cancelled: bool = False
    check: Callable[[], None] | None = None

    def report_progress(self, fraction: float) -> None:
        """Record a progress value."""
        self.progress.append(fraction)

    def raise_if_cancelled(self) -> None:
        """Run the test's hook, then raise `JobCancelled` once `cancelled` is set."""
        if self.check is not None:
            self.check()
        if self.cancelled:
            raise JobCancelled("cancelled by the test")

    @property
    def state(self) -> Mapping[str, Any]:
        """What was saved so far."""
        return dict(self.saved)

    def save_state(self, state: Mapping[str, Any]) -> None:
        """Keep `state` as a worker's store would."""
        self.saved = dict(state)


def png_file(path: Path, color: tuple[int, int, int]) -> Path:
    """Write a 320x240 PNG of one color."""
    Image.new("RGB", (320, 240), color).save(path, format="PNG")
    return path


def make_request(
    tmp_path: Path, *, public: bool = False, audio: bool = False, **fields: Any
) -> GenerationRequest:
    """A request whose media are local files, with client URLs when `public`."""
    first = png_file(tmp_path / "first.png", (200, 30, 30))
    last = png_file(tmp_path / "last.png", (30, 30, 200))
    base = "https://images.example.com/"
    driving = None
    if audio:
        wav = tmp_path / "voice.wav"
        wav.write_bytes(b"RIFF....WAVEfmt ")
        driving = MediaInput(wav, "audio/wav", base + "voice.wav" if public else None)
    values: dict[str, Any] = {
        "job_id": "video_test",
        "model": "wan2.7-i2v",
        "prompt": "a red square turns blue",
        "negative_prompt": "",
        "first_frame": MediaInput(first, "image/png", base + "first.png" if public else None),
        "last_frame": MediaInput(last, "image/png", base + "last.png" if public else None),
        "driving_audio": driving,
        "width": 1280,
        "height": 720,
        "seconds": 5,
        "seed": 42,
    }
    values.update(fields)
    return GenerationRequest(**values)


def tiny_mp4() -> bytes:
    """A valid 4-frame 64x64 H.264 MP4."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(4):
            pixels = np.full((64, 64, 3), index * 60, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()
