"""The keyframe engine end to end with a fake context: frames, paths, determinism, cancel."""

from __future__ import annotations

import itertools
import threading
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from wanserve.engines.base import GenerationRequest, MediaInput
from wanserve.engines.frames import load_frame
from wanserve.engines.keyframe import FPS, KeyframeEngine, create_engine
from wanserve.errors import EngineError, JobCancelled
from wanserve.settings import Settings

WIDTH, HEIGHT = 160, 96


class Context:
    """An EngineContext that records progress and cancels after `cancel_after` checks."""

    def __init__(self, work_dir: Path, cancel_after: int | None = None):
        self.work_dir = work_dir
        self.progress: list[float] = []
        self.checks = 0
        self.cancel_after = cancel_after

    def report_progress(self, fraction: float) -> None:
        self.progress.append(fraction)

    def raise_if_cancelled(self) -> None:
        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise JobCancelled("cancelled by the test")

    @property
    def state(self) -> Mapping[str, Any]:
        return {}

    def save_state(self, state: Mapping[str, Any]) -> None:
        raise AssertionError("the keyframe engine keeps no state")


def _pan_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two 320x192 views of the astronaut, the second panned 24 px right and 8 px down."""
    photo = data.astronaut()
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    Image.fromarray(photo[100:292, 80:400]).save(first)
    Image.fromarray(photo[108:300, 104:424]).save(last)
    return first, last


def _request(first: Path, last: Path, **fields: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "job_id": "video_keyframe_test",
        "model": "wan2.7-i2v",
        "prompt": "",
        "negative_prompt": "",
        "first_frame": MediaInput(first, "image/png"),
        "last_frame": MediaInput(last, "image/png"),
        "driving_audio": None,
        "width": WIDTH,
        "height": HEIGHT,
        "seconds": 1,
        "seed": 7,
    }
    values.update(fields)
    return GenerationRequest(**values)


@pytest.fixture
def engine() -> KeyframeEngine:
    return create_engine(Settings(), {"work_width": 160})


def test_stream_has_one_second_of_rgb_frames(engine: KeyframeEngine, tmp_path: Path) -> None:
    context = Context(tmp_path)
    stream = engine.generate(_request(*_pan_pair(tmp_path)), context)
    frames = list(stream.frames)
    assert engine.name == "keyframe"
    assert stream.fps == FPS and stream.frame_count == FPS == len(frames)
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in frames)
    assert stream.metadata["interpolation"] == "flow"
    assert stream.metadata["global_motion"] in {"homography", "none"}
    assert stream.metadata["audio_paced"] is False
    assert 0 < stream.progress_start <= 0.05
    assert context.progress and max(context.progress) <= stream.progress_start


def test_video_runs_from_the_first_input_to_the_last(
    engine: KeyframeEngine, tmp_path: Path
) -> None:
    first, last = _pan_pair(tmp_path)
    frames = list(engine.generate(_request(first, last), Context(tmp_path)).frames)
    for frame, path in ((frames[0], first), (frames[-1], last)):
        expected = np.asarray(load_frame(path, (WIDTH, HEIGHT), param="frame")).astype(np.int16)
        assert np.abs(frame.astype(np.int16) - expected).mean() < 1.5


def test_same_seed_gives_identical_frames(engine: KeyframeEngine, tmp_path: Path) -> None:
    request = _request(*_pan_pair(tmp_path))
    one = list(engine.generate(request, Context(tmp_path)).frames)
    two = list(engine.generate(request, Context(tmp_path)).frames)
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


def test_unrelated_inputs_take_the_fallback(engine: KeyframeEngine, tmp_path: Path) -> None:
    first, last = tmp_path / "cat.png", tmp_path / "coffee.png"
    Image.fromarray(data.chelsea()).save(first)
    Image.fromarray(data.coffee()).save(last)
    request = _request(first, last)
    frames = list(engine.generate(request, Context(tmp_path)).frames)
    stream = engine.generate(request, Context(tmp_path))
    assert stream.metadata["interpolation"] == "fallback"
    assert len(frames) == FPS
    again = list(engine.generate(request, Context(tmp_path)).frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))


def test_cancel_stops_the_stream_midway(engine: KeyframeEngine, tmp_path: Path) -> None:
    context = Context(tmp_path)
    stream = engine.generate(_request(*_pan_pair(tmp_path)), context)
    context.cancel_after = context.checks + 5
    made = []
    with pytest.raises(JobCancelled):
        for frame in stream.frames:
            made.append(frame)
    assert 4 <= len(made) <= 5  # one frame may be in the making when the cancel lands


def test_driving_audio_paces_the_motion(engine: KeyframeEngine, tmp_path: Path) -> None:
    audio = tmp_path / "beat.wav"
    rate = 16_000
    level = np.repeat([0.05, 0.9], rate // 2)
    tone = level * np.sin(2 * np.pi * 330 * np.arange(rate) / rate)
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((tone * 32767).astype("<i2").tobytes())
    request = _request(*_pan_pair(tmp_path), driving_audio=MediaInput(audio, "audio/wav"))
    stream = engine.generate(request, Context(tmp_path))
    frames = [f.astype(np.float32) for f in stream.frames]
    change = [np.abs(b - a).mean() for a, b in itertools.pairwise(frames)]
    assert stream.metadata["audio_paced"] is True
    assert sum(change[12:]) > 1.5 * sum(change[:11])  # the loud second half moves more


def test_load_frame_honours_exif_orientation_and_crops_to_aspect(tmp_path: Path) -> None:
    stored = np.zeros((100, 200, 3), np.uint8)
    stored[:, :100] = (255, 0, 0)  # left half red as stored; rotated 90 degrees on display
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    frame = np.asarray(load_frame(path, (50, 50), param="first_frame"))
    assert frame.shape == (50, 50, 3)
    assert frame[5, 25, 0] > 200 and frame[45, 25, 0] < 50  # red ends up on top


def test_undecodable_image_is_an_engine_error(engine: KeyframeEngine, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not an image")
    _, last = _pan_pair(tmp_path)
    with pytest.raises(EngineError, match="first_frame"):
        engine.generate(_request(broken, last), Context(tmp_path))


def test_midpoint_is_closer_to_the_truth_than_a_crossfade() -> None:
    photo = np.ascontiguousarray(data.camera()[100:400, 50:450])
    photo = cv2.cvtColor(photo, cv2.COLOR_GRAY2RGB)

    def view(dx: float) -> np.ndarray:
        matrix = np.array([[1.0, 0.0, -dx], [0.0, 1.0, 0.0]])
        return np.asarray(cv2.warpAffine(photo, matrix, (240, 160), flags=cv2.INTER_LINEAR))

    from wanserve.engines.flow import FlowInterpolator

    first, middle, last = view(10), view(30), view(50)
    ours = FlowInterpolator(first, last).frame_at(0.5).astype(np.float32)
    crossfade = (first.astype(np.float32) + last) / 2
    inner = (slice(8, -8), slice(8, -8))
    error = np.abs(ours - middle)[inner].mean()
    assert error < 0.25 * np.abs(crossfade - middle)[inner].mean()


def test_too_small_work_width_is_refused() -> None:
    with pytest.raises(ValueError, match="work_width"):
        create_engine(Settings(), {"work_width": 8})


def test_closing_the_stream_early_ends_its_helper_thread(
    engine: KeyframeEngine, tmp_path: Path
) -> None:
    stream = engine.generate(_request(*_pan_pair(tmp_path)), Context(tmp_path))
    frames = iter(stream.frames)
    for _ in range(3):
        next(frames)
    frames.close()  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name.startswith("keyframe")]
