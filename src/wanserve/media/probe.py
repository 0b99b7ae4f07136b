"""Checking that media bytes are an acceptable image or audio clip (see API.md *Media*).

The type is decided by magic bytes alone, never by a name or a Content-Type, and each
demuxer or decoder is told the type, so FFmpeg never guesses a format (some of its
formats, like playlists, would read other files or URLs).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import av.error
from PIL import (
    BmpImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    WebPImagePlugin,
)

from wanserve.errors import MediaError

MIN_SIDE = 240
MAX_SIDE = 8000
MAX_ASPECT = 8.0
MIN_AUDIO_SECONDS = 2.0
MAX_AUDIO_SECONDS = 30.0

# Pillow's default decompression-bomb limit (~89 Mpx) is not ours: we accept at most
# MAX_SIDE x MAX_SIDE pixels, and `probe_image` refuses anything larger from the header
# alone. Every Image.open elsewhere (e.g. `engines.frames.load_frame`) keeps this as a backstop:
# Pillow warns above it and refuses outright above twice it.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE

# Content type -> the Pillow plugin class. Constructing the class reads only the header,
# and skips Image.open's bomb check, which would only warn for sizes we refuse anyway.
_IMAGE_FORMATS: dict[str, type[ImageFile.ImageFile]] = {
    "image/jpeg": JpegImagePlugin.JpegImageFile,
    "image/png": PngImagePlugin.PngImageFile,
    "image/bmp": BmpImagePlugin.BmpImageFile,
    "image/webp": WebPImagePlugin.WebPImageFile,
}
_AUDIO_FORMATS = {  # content type -> (our format name, FFmpeg demuxer name)
    "audio/wav": ("wav", "wav"),
    "audio/mpeg": ("mp3", "mp3"),
    "audio/aac": ("aac", "aac"),
    "audio/mp4": ("m4a", "mov"),
    "audio/flac": ("flac", "flac"),
    "audio/ogg": ("ogg", "ogg"),
}
# EXIF orientations that turn the picture a quarter turn, swapping width and height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    """A checked image: its format and its size as displayed (EXIF orientation applied)."""

    format: str
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class AudioInfo:
    """A checked audio clip."""

    format: str
    content_type: str
    duration: float
    sample_rate: int
    channels: int


def sniff_content_type(data: bytes) -> str | None:
    """The image or audio type the magic bytes of `data` announce, or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"BM") and len(data) >= 26:
        return "image/bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith((b"fLaC",)):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    return _sniff_mpeg_audio(head)


def _sniff_mpeg_audio(head: bytes) -> str | None:
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if len(head) < 2 or head[0] != 0xFF:
        return None
    if head[1] & 0xF6 == 0xF0:  # ADTS sync word with layer 0: AAC
        return "audio/aac"
    if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # MPEG frame sync with a layer: MP3
        return "audio/mpeg"
    return None


def probe_image(data: bytes, *, param: str, max_bytes: int = 20 * 1024 * 1024) -> ImageInfo:
    """Check `data` is a whole JPEG, PNG, BMP or WEBP image within the size limits."""
    # 1. Size and type, from the bytes alone.
    check_size(data, max_bytes, param)
    content_type = sniff_content_type(data)
    if content_type not in _IMAGE_FORMATS:
        raise MediaError("the image is not a JPEG, PNG, BMP or WEBP file", param=param)
    plugin = _IMAGE_FORMATS[content_type]
    image_format = content_type.removeprefix("image/")
    try:
        with plugin(io.BytesIO(data)) as image:
            # 2. Dimensions from the header, before any pixel is decoded. (EXIF can only
            # swap them, which changes neither check; for PNG, reading EXIF decodes.)
            check_dimensions(*image.size, param)
            # 3. Decode everything once: a truncated or corrupt file fails here.
            image.load()
            width, height = _displayed_size(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"the image is not a valid {image_format} file", param=param) from exc
    return ImageInfo(image_format, content_type, width, height)


def _displayed_size(image: Image.Image) -> tuple[int, int]:
    width, height = image.size
    if image.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS:
        return height, width
    return width, height


def check_dimensions(width: int, height: int, param: str, what: str = "image") -> None:
    """Each side in 240..8000 px and the aspect within 1:8..8:1, or a MediaError."""
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise MediaError(
                f"the {what} is {width}x{height} pixels; each side must be between "
                f"{MIN_SIDE} and {MAX_SIDE} pixels",
                param=param,
            )
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise MediaError(
            f"the {what} is {width}x{height} pixels; its aspect ratio must be between "
            f"1:{MAX_ASPECT:g} and {MAX_ASPECT:g}:1",
            param=param,
        )


def probe_audio(data: bytes, *, param: str, max_bytes: int = 15 * 1024 * 1024) -> AudioInfo:
    """Check `data` is a decodable WAV, MP3, AAC/M4A, FLAC or OGG clip of 2..30 s."""
    check_size(data, max_bytes, param)
    content_type = sniff_content_type(data)
    if content_type not in _AUDIO_FORMATS:
        raise MediaError("the audio is not a WAV, MP3, AAC/M4A, FLAC or OGG file", param=param)
    demuxer = _AUDIO_FORMATS[content_type][1]
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            return _probe_container(container, content_type, param)
    except av.error.FFmpegError as exc:
        raise MediaError("the audio could not be decoded", param=param) from exc


def _probe_container(
    container: av.container.InputContainer, content_type: str, param: str
) -> AudioInfo:
    if not container.streams.audio:
        raise MediaError("the audio file has no audio stream", param=param)
    stream = container.streams.audio[0]
    duration = _declared_duration(container, stream)
    if duration is not None:
        _check_duration(duration, param)
    counted, sample_rate, channels = _decode(container, stream, whole=duration is None)
    if sample_rate == 0:
        raise MediaError("no audio could be decoded from the file", param=param)
    if duration is None:
        duration = counted
        _check_duration(duration, param)
    return AudioInfo(_AUDIO_FORMATS[content_type][0], content_type, duration, sample_rate, channels)


def _declared_duration(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decode(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, *, whole: bool
) -> tuple[float, int, int]:
    """Seconds decoded, sample rate and channels: the first frame, or all (capped)."""
    samples, sample_rate, channels = 0, 0, 0
    for frame in container.decode(stream):
        sample_rate, channels = frame.sample_rate, frame.layout.nb_channels
        samples += frame.samples
        # Past the limit the exact length no longer matters: stop decoding.
        if not whole or samples > MAX_AUDIO_SECONDS * sample_rate:
            break
    return (samples / sample_rate if sample_rate else 0.0), sample_rate, channels


def _check_duration(duration: float, param: str) -> None:
    if not MIN_AUDIO_SECONDS <= duration <= MAX_AUDIO_SECONDS:
        raise MediaError(
            f"the audio is {duration:.1f} s long; it must be between "
            f"{MIN_AUDIO_SECONDS:g} and {MAX_AUDIO_SECONDS:g} s",
            param=param,
        )


def check_size(data: bytes, max_bytes: int, param: str) -> None:
    """At most `max_bytes`, or a MediaError with code media_too_large."""
    if len(data) > max_bytes:
        raise MediaError(
            f"the file is {len(data)} bytes; the limit is {max_bytes} bytes",
            code="media_too_large",
            param=param,
        )
