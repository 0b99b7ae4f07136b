"""probe_image / probe_audio / sniff_content_type on media generated here with Pillow and PyAV."""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from wanserve.errors import MediaError
from wanserve.media.probe import (
    AudioInfo,
    ImageInfo,
    probe_audio,
    probe_image,
    sniff_content_type,
)


@functools.cache
def image_bytes(fmt: str, width: int, height: int, orientation: int | None = None) -> bytes:
    """A small-noise image (so it compresses like a photo would not: tiny and fast)."""
    out = io.BytesIO()
    image = Image.new("RGB", (width, height), (40, 120, 200))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(out, format=fmt, exif=exif) if orientation else image.save(out, format=fmt)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and has no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("fmt", "size", "content_type"),
    [
        ("JPEG", (320, 240), "image/jpeg"),
        ("PNG", (240, 240), "image/png"),
        ("BMP", (300, 400), "image/bmp"),
        ("WEBP", (640, 360), "image/webp"),
        ("PNG", (1920, 240), "image/png"),  # exactly 8:1
        ("PNG", (240, 1920), "image/png"),  # exactly 1:8
        ("PNG", (8000, 1000), "image/png"),  # longest side allowed
    ],
)
def test_valid_images(fmt: str, size: tuple[int, int], content_type: str) -> None:
    data = image_bytes(fmt, *size)
    assert sniff_content_type(data) == content_type
    info = probe_image(data, param="first_frame")
    assert info == ImageInfo(fmt.lower(), content_type, *size)


def test_exif_rotation_swaps_reported_size(tmp_path: Path) -> None:
    data = image_bytes("JPEG", 400, 300, orientation=6)
    assert probe_image(data, param="p") == ImageInfo("jpeg", "image/jpeg", 300, 400)


BAD_IMAGES = {
    "too-narrow": (image_bytes("PNG", 239, 240), "between 240 and 8000"),
    "too-short": (image_bytes("JPEG", 320, 200), "between 240 and 8000"),
    "too-wide-side": (png_header_only(8001, 2000), "between 240 and 8000"),
    "bomb-header": (png_header_only(100_000, 100_000), "between 240 and 8000"),
    "bomb-9000": (png_header_only(9000, 9000), "between 240 and 8000"),
    "aspect-wide": (image_bytes("PNG", 1921, 240), "aspect ratio"),
    "aspect-tall": (image_bytes("WEBP", 240, 1921), "aspect ratio"),
    "truncated-jpeg": (image_bytes("JPEG", 320, 240)[:300], "not a valid jpeg"),
    "truncated-png": (image_bytes("PNG", 320, 240)[:60], "not a valid png"),
    "truncated-bmp": (image_bytes("BMP", 320, 240)[:5000], "not a valid bmp"),
    "truncated-webp": (image_bytes("WEBP", 320, 240)[:40], "not a valid webp"),
    "png-no-pixels": (png_header_only(320, 240), "not a valid png"),
    "corrupt-jpeg": (image_bytes("JPEG", 320, 240)[:20] + b"\x00" * 400, "not a valid jpeg"),
    "gif": (b"GIF89a" + b"\x00" * 100, "not a JPEG, PNG, BMP or WEBP"),
    "text": (b"<html>not an image</html>", "not a JPEG, PNG, BMP or WEBP"),
    "empty": (b"", "not a JPEG, PNG, BMP or WEBP"),
    "wav-as-image": (b"RIFF\x00\x00\x00\x00WAVEfmt ", "not a JPEG, PNG, BMP or WEBP"),
}


@pytest.mark.parametrize(("data", "message"), BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_images(data: bytes, message: str) -> None:
    with pytest.raises(MediaError) as caught:
        probe_image(data, param="first_frame")
    assert caught.value.param == "first_frame"
    assert message in caught.value.message


def test_image_over_byte_limit() -> None:
    data = image_bytes("PNG", 320, 240)
    with pytest.raises(MediaError) as caught:
        probe_image(data, param="p", max_bytes=len(data) - 1)
    assert caught.value.code == "media_too_large"
    assert probe_image(data, param="p", max_bytes=len(data)).width == 320


def _samples(codec: av.AudioCodecContext, seconds: float, channels: int) -> np.ndarray:
    rate = codec.sample_rate
    wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)
    planes = np.tile(wave, (channels, 1))
    name = codec.format.name
    if name.startswith("s16"):
        planes = planes * 32767
    elif name.startswith("s32"):
        planes = planes * 2**31 - 1
    dtype = {"s16": np.int16, "s32": np.int32, "flt": np.float32}[name.rstrip("p")]
    if not codec.format.is_planar:
        planes = planes.T.reshape(1, -1)
    return np.ascontiguousarray(planes.astype(dtype))


class _Pipe:
    """A write-only, unseekable output: the muxer cannot go back to write the length."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def getvalue(self) -> bytes:
        return bytes(self.data)


@functools.cache
def audio_bytes(
    container: str,
    codec: str,
    seconds: float,
    rate: int = 16000,
    channels: int = 1,
    streamed: bool = False,
) -> bytes:
    """A sine tone encoded with PyAV."""
    layout = "mono" if channels == 1 else "stereo"
    out = _Pipe() if streamed else io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate, layout=layout)
        samples = _samples(stream.codec_context, seconds, channels)
        step = stream.codec_context.frame_size or 1024
        total = samples.shape[-1] // (1 if stream.codec_context.format.is_planar else channels)
        for start in range(0, total, step):
            if stream.codec_context.format.is_planar:
                chunk = samples[:, start : start + step]
            else:
                chunk = samples[:, start * channels : (start + step) * channels]
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format=stream.codec_context.format.name, layout=layout
            )
            frame.sample_rate, frame.pts = rate, start
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


@pytest.mark.parametrize(
    ("container", "codec", "rate", "fmt", "content_type"),
    [
        ("wav", "pcm_s16le", 16000, "wav", "audio/wav"),
        ("mp3", "libmp3lame", 16000, "mp3", "audio/mpeg"),
        ("adts", "aac", 16000, "aac", "audio/aac"),
        ("ipod", "aac", 16000, "m4a", "audio/mp4"),
        ("flac", "flac", 16000, "flac", "audio/flac"),
        ("ogg", "libopus", 48000, "ogg", "audio/ogg"),
    ],
)
def test_valid_audio(container: str, codec: str, rate: int, fmt: str, content_type: str) -> None:
    data = audio_bytes(container, codec, 3.0, rate)
    assert sniff_content_type(data) == content_type
    info = probe_audio(data, param="driving_audio")
    assert (info.format, info.content_type, info.sample_rate, info.channels) == (
        fmt,
        content_type,
        rate,
        1,
    )
    assert info.duration == pytest.approx(3.0, abs=0.15)


@pytest.mark.parametrize("seconds", [2.0, 30.0])
def test_audio_duration_bounds_are_inclusive(seconds: float) -> None:
    info = probe_audio(audio_bytes("wav", "pcm_s16le", seconds, 8000), param="p")
    assert info == AudioInfo("wav", "audio/wav", seconds, 8000, 1)


@pytest.mark.parametrize(("seconds", "ok"), [(3.0, True), (1.0, False), (45.0, False)])
def test_audio_without_declared_length_is_decoded_to_count(seconds: float, ok: bool) -> None:
    data = audio_bytes("flac", "flac", seconds, 8000, streamed=True)
    if ok:
        assert probe_audio(data, param="p").duration == pytest.approx(seconds)
        return
    with pytest.raises(MediaError, match="between 2 and 30 s"):
        probe_audio(data, param="p")


def test_stereo_audio() -> None:
    info = probe_audio(audio_bytes("flac", "flac", 2.5, 16000, 2), param="p")
    assert (info.channels, info.duration) == (2, pytest.approx(2.5))


def _video_only_mp4() -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as muxer:
        stream = muxer.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = index
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


BAD_AUDIO = {
    "too-short": (lambda: audio_bytes("wav", "pcm_s16le", 1.5, 8000), "between 2 and 30 s"),
    "too-long": (lambda: audio_bytes("wav", "pcm_s16le", 31.0, 8000), "between 2 and 30 s"),
    "too-long-mp3": (lambda: audio_bytes("mp3", "libmp3lame", 40.0, 8000), "between 2 and 30"),
    "no-audio-stream": (_video_only_mp4, "no audio stream"),
    "wav-header-only": (lambda: audio_bytes("wav", "pcm_s16le", 3.0)[:44], "audio"),
    "garbage-after-riff": (lambda: b"RIFF\x00\x00\x00\x00WAVE" + b"\x07" * 500, "decoded"),
    "garbage-flac": (lambda: b"fLaC" + b"\x00" * 300, "decoded"),
    "garbage-ogg": (lambda: b"OggS" + b"\x01" * 300, "decoded"),
    "image": (lambda: image_bytes("PNG", 320, 240), "not a WAV, MP3"),
    "text": (lambda: b"hello, this is not audio at all", "not a WAV, MP3"),
    "empty": (lambda: b"", "not a WAV, MP3"),
}


@pytest.mark.parametrize(("make", "message"), BAD_AUDIO.values(), ids=BAD_AUDIO.keys())
def test_bad_audio(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(MediaError) as caught:
        probe_audio(make(), param="driving_audio")
    assert caught.value.param == "driving_audio"
    assert message in caught.value.message


def test_audio_over_byte_limit() -> None:
    data = audio_bytes("wav", "pcm_s16le", 3.0)
    with pytest.raises(MediaError) as caught:
        probe_audio(data, param="p", max_bytes=len(data) - 1)
    assert caught.value.code == "media_too_large"


@pytest.mark.parametrize(
    ("head", "content_type"),
    [
        (b"\xff\xd8\xff\xe0", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"BM" + b"\x00" * 30, "image/bmp"),
        (b"BM", None),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"\xff\xf1\x50\x80", "audio/aac"),
        (b"\xff\xf9\x50\x80", "audio/aac"),
        (b"\x00\x00\x00\x20ftypM4A ", "audio/mp4"),
        (b"fLaC\x00\x00\x00\x22", "audio/flac"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"GIF89a", None),
        (b"\xff", None),
        (b"\xff\x00", None),
        (b"", None),
    ],
)
def test_sniff_content_type(head: bytes, content_type: str | None) -> None:
    assert sniff_content_type(head) == content_type
