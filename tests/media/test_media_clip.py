"""Checking `first_clip` bytes: containers and codecs we decode, and what we refuse."""

from __future__ import annotations

import pytest

from helpers import clip_bytes, pan_frames
from wanserve.errors import MediaError
from wanserve.media.clip import probe_clip

FRAMES = [frame[:240, :320] for frame in pan_frames(48)]  # 2 s at 24 fps


@pytest.mark.parametrize(
    ("container", "codec", "content_type", "name"),
    [
        ("mp4", "libx264", "video/mp4", "H.264"),
        ("mp4", "libx265", "video/mp4", "H.265"),
        ("mov", "libx264", "video/quicktime", "H.264"),
        ("webm", "libvpx-vp9", "video/webm", "VP9"),
    ],
)
def test_decodable_clips(container, codec, content_type, name):
    info = probe_clip(
        clip_bytes(FRAMES, container=container, codec=codec), param="p", max_bytes=10**7
    )
    assert (info.content_type, info.codec) == (content_type, name)
    assert (info.width, info.height, info.frame_count) == (320, 240, 48)
    assert info.duration == pytest.approx(2.0, abs=0.01)


def test_another_codec_is_refused():
    data = clip_bytes(FRAMES, codec="mpeg4")
    with pytest.raises(MediaError, match=r"must be H\.264, H\.265 or VP9") as caught:
        probe_clip(data, param="media[0].url", max_bytes=10**7)
    assert caught.value.param == "media[0].url"


def test_a_truncated_clip_is_refused():
    data = clip_bytes(FRAMES)
    with pytest.raises(MediaError) as caught:
        probe_clip(data[: len(data) // 3], param="first_clip", max_bytes=10**7)
    assert caught.value.param == "first_clip"


def test_a_tiny_picture_is_refused():
    data = clip_bytes([frame[:120, :160] for frame in FRAMES])
    with pytest.raises(MediaError, match="the clip is 160x120 pixels"):
        probe_clip(data, param="p", max_bytes=10**7)
