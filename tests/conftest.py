"""Shared fixtures: test media, a local media server, settings, an app and a worker."""

from __future__ import annotations

import functools
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings


def scene(width: int, height: int, shift: int) -> Image.Image:
    """A textured test picture with a square that moves by `shift` pixels."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x // 16 + y // 16) % 2) * 80 + 60,
        ],
        axis=-1,
    ).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    side = height // 4
    left = width // 8 + shift
    draw.rectangle([left, height // 3, left + side, height // 3 + side], fill=(250, 240, 20))
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    """Encode a Pillow image."""
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def wav_bytes(seconds: float, rate: int = 16000, freq: float = 440.0) -> bytes:
    """A mono sine-wave WAV made with PyAV."""
    out = io.BytesIO()
    samples = (
        np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate) * 0.4 * 32767
    ).astype(np.int16)
    with av.open(out, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test media on disk: 16:9, 9:16 and 1:1 frame pairs and a 3 s WAV."""
    folder = tmp_path_factory.mktemp("media")
    for name, (w, h) in {"wide": (640, 360), "tall": (360, 640), "square": (480, 480)}.items():
        (folder / f"{name}-first.png").write_bytes(png_bytes(scene(w, h, 0)))
        (folder / f"{name}-last.png").write_bytes(png_bytes(scene(w, h, w // 3)))
    (folder / "first.jpg").write_bytes(png_bytes(scene(640, 360, 0), "JPEG"))
    (folder / "audio.wav").write_bytes(wav_bytes(3.0))
    (folder / "long.wav").write_bytes(wav_bytes(8.0))
    (folder / "notes.txt").write_text("not an image")
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def media_server(media_dir: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `media_dir`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data dir, allowed to fetch from the local media server."""
    return Settings(
        data_dir=tmp_path / "data",
        media_allowed_hosts=["127.0.0.1"],
        poll_interval=0.05,
        encoder_preset="ultrafast",
        workers=0,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient on an app without worker processes."""
    with TestClient(create_app(settings, workers=0)) as test_client:
        yield test_client


@pytest.fixture
def worker(settings: Settings) -> Iterator[Worker]:
    """A worker running in a thread of the test process (stopped after the test)."""
    runner = build_worker(settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield runner
    runner.stopping.set()
    thread.join(timeout=30)
    runner.registry.close()


def seed_body(base: str, *, audio: bool = False, **fields: object) -> dict[str, object]:
    """The seed's request body, with media URLs on the local media server."""
    media = [
        {"type": "first_frame", "url": f"{base}/wide-first.png"},
        {"type": "last_frame", "url": f"{base}/wide-last.png"},
    ]
    if audio:
        media.append({"type": "driving_audio", "url": f"{base}/audio.wav"})
    body: dict[str, object] = {
        "model": "wan2.7-i2v",
        "prompt": "A cat walks from one end of the hallway to the other.",
        "media": media,
        "seconds": "2",
        "size": "720P",
    }
    body.update(fields)
    return body
