"""Test helpers shared by every test folder: test media and the seed's request body."""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw


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


class ManualClock:
    """A clock that moves only when the test moves it; it starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass."""
        self.now += seconds


def race(count: int, task: Callable[[int], Any]) -> list[Any]:
    """Run `task(i)` in `count` threads released at the same moment; each result or error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = task(index)
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


class LogWatch(logging.Handler):
    """Counts the log records whose message matches `pattern`; `seen(n)` waits for n."""

    def __init__(self, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = re.compile(pattern)
        self.count = 0
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        if self.pattern.search(record.getMessage()):
            with self._changed:
                self.count += 1
                self._changed.notify_all()

    def seen(self, n: int, timeout: float = 60) -> bool:
        """Wait until `n` were logged; False when `timeout` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= n, timeout)


def clip_bytes(
    frames: list[np.ndarray],
    fps: int = 24,
    *,
    container: str = "mp4",
    codec: str = "libx264",
    audio_freq: float | None = None,
) -> bytes:
    """Encode RGB frames as a video clip with PyAV (optionally with a sine-wave track)."""
    out = io.BytesIO()
    height, width = frames[0].shape[:2]
    with av.open(out, "w", format=container) as muxer:
        fast = {"libx264": {"preset": "ultrafast"}, "libvpx-vp9": {"deadline": "realtime"}}
        video = muxer.add_stream(codec, rate=fps, options=fast.get(codec, {}))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if audio_freq is not None:
            audio = muxer.add_stream("aac", rate=48000)
            audio.layout = "stereo"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            muxer.mux(video.encode(frame))
        muxer.mux(video.encode(None))
        if audio is not None:
            samples = round(len(frames) / fps * 48000)
            wave = np.sin(2 * np.pi * audio_freq * np.arange(samples) / 48000) * 0.4
            for start in range(0, samples, 1024):
                chunk = np.tile(wave[start : start + 1024].astype(np.float32), (2, 1))
                piece = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                piece.sample_rate, piece.pts = 48000, start
                muxer.mux(audio.encode(piece))
            muxer.mux(audio.encode(None))
    return out.getvalue()


def pan_frames(count: int, width: int = 480, height: int = 360, step: int = 4) -> list[np.ndarray]:
    """A camera panning right over a photograph, `step` pixels a frame."""
    from skimage import data

    photo = np.asarray(Image.fromarray(data.coffee()).resize((1200, 900)))
    return [photo[100 : 100 + height, 40 + i * step : 40 + i * step + width] for i in range(count)]


def completed_video(client, video_id: str, timeout: float = 180) -> dict:
    """Poll `GET /v1/videos/{id}` through `client` until it finishes; assert it completed."""
    deadline = time.monotonic() + timeout
    while (video := client.get(f"/v1/videos/{video_id}").json())["status"] not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert video["status"] == "completed", video
    return video
