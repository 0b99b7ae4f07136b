"""The streaming MP4 writer, checked by decoding what it wrote with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from render_samples import gradient_frame, gradient_frames

from wanserve.errors import EngineError
from wanserve.render.encoder import AUDIO_RATE, AudioSource, Mp4Writer, frame_rate


def encode(path: Path, count: int, width: int, height: int, fps: float, **kwargs) -> Path:
    with Mp4Writer(path, width=width, height=height, fps=fps, **kwargs) as writer:
        for frame in gradient_frames(count, width, height):
            writer.write(frame)
    return path


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize(
    ("seconds", "width", "height", "fps"),
    [(2, 320, 240, 24), (5, 320, 240, 16), (1, 1280, 720, 24), (2, 320, 240, 30000 / 1001)],
)
def test_h264_yuv420p_with_exact_size_count_and_duration(
    tmp_path: Path, seconds: float, width: int, height: int, fps: float
) -> None:
    count = round(seconds * fps)
    path = encode(tmp_path / "out.mp4", count, width, height, fps)
    with av.open(str(path)) as container:
        assert not container.streams.audio
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (width, height)
        assert stream.average_rate == frame_rate(fps)
        assert stream.duration is not None
        duration = float(stream.duration * stream.time_base)
        decoded = sum(1 for _ in container.decode(stream))
    assert decoded == count
    assert abs(duration - count / fps) < 1 / fps


def test_index_comes_before_media_data(tmp_path: Path) -> None:
    data = encode(tmp_path / "out.mp4", 24, 320, 240, 24).read_bytes()
    assert 0 < data.index(b"moov") < data.index(b"mdat")


def test_first_and_last_frames_survive_encoding(tmp_path: Path) -> None:
    count, width, height = 48, 320, 240
    frames = decoded_frames(encode(tmp_path / "out.mp4", count, width, height, 24))
    for index in (0, count - 1):
        expected = gradient_frame(index, width, height).astype(np.int16)
        assert np.abs(frames[index].astype(np.int16) - expected).mean() < 3.0


def test_fraction_frame_rates_stay_exact() -> None:
    assert frame_rate(30000 / 1001) == Fraction(30000, 1001)
    assert frame_rate(24.0) == 24
    with pytest.raises(EngineError):
        frame_rate(0)


def test_odd_sides_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="even"):
        Mp4Writer(tmp_path / "out.mp4", width=321, height=240, fps=24)


def test_unknown_preset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="preset"):
        Mp4Writer(tmp_path / "out.mp4", width=320, height=240, fps=24, preset="warp")
    assert not (tmp_path / "out.mp4").exists()


def test_wrong_frame_shape_aborts_and_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with (
        pytest.raises(EngineError, match="expected"),
        Mp4Writer(path, width=320, height=240, fps=24) as writer,
    ):
        writer.write(gradient_frame(0, 320, 240))
        writer.write(gradient_frame(1, 160, 120))
    assert not path.exists()


def test_no_frames_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with (
        pytest.raises(EngineError, match="no frames"),
        Mp4Writer(path, width=320, height=240, fps=24),
    ):
        pass
    assert not path.exists()


def test_audio_source_pads_with_silence_past_the_end(make_audio) -> None:
    source = AudioSource(make_audio(0.5))
    try:
        sound = source.read(AUDIO_RATE // 2 - 2000)
        tail = source.read(AUDIO_RATE)
    finally:
        source.close()
    assert sound.shape == (2, AUDIO_RATE // 2 - 2000) and sound.dtype == np.float32
    assert np.abs(sound).max() > 0.3
    assert tail.shape == (2, AUDIO_RATE)
    assert np.abs(tail[:, 4000:]).max() == 0.0


def test_undecodable_audio_is_an_engine_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 64)
    with pytest.raises(EngineError, match="audio"):
        AudioSource(junk)
