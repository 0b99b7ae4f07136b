"""render_frame_stream and render_video_file end to end, checked by decoding the results."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from render_samples import gradient_frame, gradient_frames

from wanserve.engines.base import FrameStream, VideoFile
from wanserve.errors import EngineError, JobCancelled
from wanserve.render.pipeline import is_faststart, render_frame_stream, render_video_file
from wanserve.render.watermark import overlay_for


def audio_seconds(path: Path) -> float:
    """Seconds of audio a player would play (decoded samples, encoder priming trimmed)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def audio_tail_peak(path: Path, seconds: float) -> float:
    """Loudest sample in the last `seconds` of the audio track."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray() for f in container.decode(container.streams.audio[0])]
        rate = container.streams.audio[0].rate
    samples = np.concatenate(frames, axis=1)
    return float(np.abs(samples[:, -round(seconds * rate) :]).max())


def test_renders_video_and_previews(tmp_path: Path, make_stream) -> None:
    result = render_frame_stream(
        make_stream(2), out_dir=tmp_path, audio_path=None, watermark=False, duration=2
    )
    assert result.video_path == tmp_path / "video.mp4"
    assert (result.width, result.height, result.fps) == (320, 240, 24.0)
    assert (result.frame_count, result.duration, result.has_audio) == (48, 2.0, False)
    with av.open(str(result.video_path)) as container:
        assert not container.streams.audio
        assert container.streams.video[0].codec_context.name == "h264"
    with Image.open(result.thumbnail_path) as thumbnail:
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (320, 240)
    with Image.open(result.spritesheet_path) as sheet:
        assert sheet.format == "JPEG"
        assert sheet.size == (5 * 160, 5 * 120)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "spritesheet.jpg",
        "thumbnail.webp",
        "video.mp4",
    ]


@pytest.mark.parametrize(("audio_length", "mp3"), [(3.5, False), (1.0, False), (3.5, True)])
def test_audio_is_cut_or_padded_to_the_video(
    tmp_path: Path, make_stream, make_audio, audio_length: float, mp3: bool
) -> None:
    audio = make_audio(audio_length, mp3=mp3)
    result = render_frame_stream(
        make_stream(2), out_dir=tmp_path / "out", audio_path=audio, watermark=False, duration=2
    )
    assert result.has_audio
    assert abs(audio_seconds(result.video_path) - 2.0) < 1 / 24
    if audio_length < 2:
        assert audio_tail_peak(result.video_path, 0.5) < 0.01  # padded with silence
    else:
        assert audio_tail_peak(result.video_path, 0.5) > 0.2  # cut, still sounding


def test_watermark_marks_the_bottom_right_only(tmp_path: Path, make_stream) -> None:
    plain = render_frame_stream(
        make_stream(1), out_dir=tmp_path / "plain", audio_path=None, watermark=False, duration=1
    )
    marked = render_frame_stream(
        make_stream(1), out_dir=tmp_path / "marked", audio_path=None, watermark=True, duration=1
    )
    with av.open(str(plain.video_path)) as a, av.open(str(marked.video_path)) as b:
        first_a = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
        first_b = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)
    diff = np.abs(first_a - first_b).mean(axis=2)
    box = overlay_for(240, 320)
    bottom, right = box.top + box.keep.shape[0], box.left + box.keep.shape[1]
    assert diff[box.top : bottom, box.left : right].mean() > 20  # clearly visible
    # Elsewhere only H.264's block edges next to the mark may move a little.
    outside = np.ones_like(diff, dtype=bool)
    outside[box.top - 16 : bottom + 16, box.left - 16 : right + 16] = False
    assert diff[outside].mean() < 1.0


def test_on_frame_sees_every_index(tmp_path: Path, make_stream) -> None:
    seen: list[int] = []
    render_frame_stream(
        make_stream(1), out_dir=tmp_path, audio_path=None, watermark=False, duration=1,
        on_frame=seen.append,
    )  # fmt: skip
    assert seen == list(range(24))


def test_cancel_from_on_frame_propagates_and_leaves_nothing(tmp_path: Path, make_audio) -> None:
    closed: list[bool] = []

    def frames() -> Iterator[np.ndarray]:
        try:
            yield from gradient_frames(48, 320, 240)
        finally:
            closed.append(True)

    def cancel_at_ten(index: int) -> None:
        if index == 10:
            raise JobCancelled("cancelled")

    stream = FrameStream(fps=24, frame_count=48, frames=frames())
    with pytest.raises(JobCancelled):
        render_frame_stream(
            stream, out_dir=tmp_path, audio_path=make_audio(2.0), watermark=True, duration=2,
            on_frame=cancel_at_ten,
        )  # fmt: skip
    assert closed == [True]  # the engine's generator was closed, its cleanup ran
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("sine")] == []


def test_a_stream_without_frames_is_an_engine_error(tmp_path: Path) -> None:
    stream = FrameStream(fps=24, frame_count=48, frames=iter([]))
    with pytest.raises(EngineError, match="no frames"):
        render_frame_stream(stream, out_dir=tmp_path, audio_path=None, watermark=False, duration=2)
    assert list(tmp_path.iterdir()) == []


def _peak_memory(tmp_path: Path, count: int) -> int:
    stream = FrameStream(fps=24, frame_count=count, frames=gradient_frames(count, 640, 360))
    tracemalloc.start()
    try:
        render_frame_stream(
            stream, out_dir=tmp_path / str(count), audio_path=None, watermark=True,
            duration=count / 24, preset="ultrafast",
        )  # fmt: skip
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_stays_flat_with_length(tmp_path: Path) -> None:
    short, long = _peak_memory(tmp_path, 48), _peak_memory(tmp_path, 240)
    frame_bytes = 640 * 360 * 3
    # Holding the frames would add 192 of them (~130 MB); allow a few frames of slack.
    assert long < short + 4 * frame_bytes, (short, long)


def _write_mp4(path: Path, codec: str, *, faststart: bool, audio: Path | None = None) -> Path:
    """A 1 s 24 fps test video made outside our encoder (as a provider would)."""
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        video = container.add_stream(codec, rate=24)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        sound = container.add_stream("aac", rate=48_000) if audio else None
        for index in range(24):
            frame = av.VideoFrame.from_ndarray(gradient_frame(index, 320, 240), format="rgb24")
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio and sound:
            with av.open(str(audio)) as source:
                for decoded in source.decode(audio=0):
                    decoded.pts = None
                    container.mux(sound.encode(decoded))
            container.mux(sound.encode(None))
    return path


@pytest.mark.parametrize("faststart", [True, False])
def test_video_file_in_h264_is_kept_and_made_faststart(tmp_path: Path, faststart: bool) -> None:
    source = _write_mp4(tmp_path / "provider.mp4", "libx264", faststart=faststart)
    assert is_faststart(source) == faststart
    encoded = source.read_bytes()
    result = render_video_file(VideoFile(path=source), out_dir=tmp_path / "out")
    assert is_faststart(result.video_path)
    if faststart:
        assert result.video_path.read_bytes() == encoded  # moved, not touched
    assert (result.width, result.height, result.fps, result.frame_count) == (320, 240, 24.0, 24)
    assert result.duration == 1.0 and not result.has_audio
    with Image.open(result.spritesheet_path) as sheet:
        assert sheet.format == "JPEG"


def test_video_file_in_another_codec_is_reencoded(tmp_path: Path, make_audio) -> None:
    source = _write_mp4(tmp_path / "provider.mp4", "mpeg4", faststart=False, audio=make_audio(1))
    result = render_video_file(VideoFile(path=source), out_dir=tmp_path / "out")
    with av.open(str(result.video_path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(video=0)) == 24
    assert result.frame_count == 24 and result.has_audio
    assert abs(audio_seconds(result.video_path) - 1.0) < 1 / 24
    with Image.open(result.thumbnail_path) as thumbnail:
        assert thumbnail.format == "WEBP"


def test_unreadable_video_file_is_an_engine_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(EngineError):
        render_video_file(VideoFile(path=junk), out_dir=tmp_path / "out")
