"""`first_clip` media on POST /v1/videos: the valid sets, every invalid one, bad clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import clip_bytes, pan_frames


@pytest.fixture(scope="module")
def clips(media_dir: Path) -> Path:
    """Clips beside the test frames: 3 s MP4 with sound, WebM, MOV, 11 s and 1 s ones."""
    (media_dir / "clip.mp4").write_bytes(clip_bytes(pan_frames(72), audio_freq=440))
    (media_dir / "clip.webm").write_bytes(
        clip_bytes(pan_frames(48), container="webm", codec="libvpx-vp9")
    )
    (media_dir / "clip.mov").write_bytes(clip_bytes(pan_frames(48), container="mov"))
    small = [frame[:240, :320] for frame in pan_frames(8)]
    (media_dir / "long.mp4").write_bytes(clip_bytes(small * 33, fps=24))
    (media_dir / "short.mp4").write_bytes(clip_bytes(small * 3, fps=24))
    return media_dir


def _item(kind: str, url: str) -> dict[str, str]:
    return {"type": kind, "url": url}


def _body(media: list[dict[str, str]], **fields: object) -> dict[str, object]:
    return {"model": "wan2.7-i2v", "seconds": "2", "size": "720P", "media": media, **fields}


VALID = {
    "clip": ["first_clip"],
    "clip+last": ["first_clip", "last_frame"],
    "clip+audio": ["first_clip", "driving_audio"],
    "clip+last+audio": ["first_clip", "last_frame", "driving_audio"],
}
FILES = {
    "first_clip": "clip.mp4",
    "first_frame": "wide-first.png",
    "last_frame": "wide-last.png",
    "driving_audio": "audio.wav",
}


@pytest.mark.parametrize("kinds", VALID.values(), ids=VALID.keys())
def test_valid_sets_are_queued_with_the_clips_aspect(client, media_server, clips, kinds):
    media = [_item(k, f"{media_server}/{FILES[k]}") for k in kinds]
    response = client.post("/v1/videos", json=_body(media, seconds="4"))
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["status"] == "queued"
    assert video["seconds"] == "4"  # the new part
    assert video["metadata"]["source_seconds"] == 3.0
    created = client.get(f"/v1/videos/{video['id']}").json()
    assert created["metadata"]["source_seconds"] == 3.0


@pytest.mark.parametrize("name", ["clip.webm", "clip.mov"])
def test_webm_and_mov_clips(client, media_server, clips, name):
    media = [_item("first_clip", f"{media_server}/{name}")]
    response = client.post("/v1/videos", json=_body(media))
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["source_seconds"] == pytest.approx(2.0, abs=0.01)


INVALID_SETS = {
    "frame+clip": ["first_frame", "first_clip"],
    "frame+clip+last": ["first_frame", "first_clip", "last_frame"],
    "clip twice": ["first_clip", "first_clip"],
    "last only": ["last_frame"],
    "first only": ["first_frame"],
    "audio only": ["driving_audio"],
    "last+audio": ["last_frame", "driving_audio"],
    "clip+audio twice": ["first_clip", "driving_audio", "driving_audio"],
}


@pytest.mark.parametrize("kinds", INVALID_SETS.values(), ids=INVALID_SETS.keys())
def test_every_invalid_set_is_a_400_naming_media(client, media_server, clips, kinds):
    media = [_item(k, f"{media_server}/{FILES[k]}") for k in kinds]
    response = client.post("/v1/videos", json=_body(media))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "media", error
    assert error["type"] == "invalid_request_error"


BAD_CLIPS = {
    "image": ("wide-first.png", "not an MP4, MOV or WebM"),
    "text": ("notes.txt", "not an MP4, MOV or WebM"),
    "audio": ("audio.wav", "not an MP4, MOV or WebM"),
    "too long": ("long.mp4", "11.0 s long"),
    "too short": ("short.mp4", "1.0 s long"),
}


@pytest.mark.parametrize(("name", "says"), BAD_CLIPS.values(), ids=BAD_CLIPS.keys())
def test_a_bad_clip_is_a_400_naming_its_url(client, media_server, clips, name, says):
    media = [
        _item("last_frame", f"{media_server}/wide-last.png"),
        _item("first_clip", f"{media_server}/{name}"),
    ]
    response = client.post("/v1/videos", json=_body(media))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "media[1].url"
    assert says in error["message"]


def test_a_clip_over_the_size_limit_is_a_400_naming_its_url(client, settings, media_server, clips):
    settings.max_clip_bytes = 20_000
    media = [_item("first_clip", f"{media_server}/clip.mp4")]
    response = client.post("/v1/videos", json=_body(media))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "media[0].url"
    assert error["code"] == "media_too_large"


def test_a_clip_behind_a_forbidden_address_is_refused(client):
    media = [_item("first_clip", "http://169.254.169.254/clip.mp4")]
    response = client.post("/v1/videos", json=_body(media))
    assert response.status_code == 400
    assert response.json()["error"] | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "media[0].url",
        "code": "media_url_forbidden",
    }


def test_clip_as_data_url_and_as_upload(client, clips):
    import base64

    data = (clips / "clip.webm").read_bytes()
    url = "data:video/webm;base64," + base64.b64encode(data).decode()
    response = client.post("/v1/videos", json=_body([_item("first_clip", url)]))
    assert response.status_code == 200, response.text
    files = [
        ("model", (None, "wan2.7-i2v")),
        ("seconds", (None, "3")),
        ("first_clip", ("c.mp4", (clips / "clip.mp4").read_bytes(), "video/mp4")),
        ("last_frame", ("b.png", (clips / "wide-last.png").read_bytes(), "image/png")),
    ]
    response = client.post("/v1/videos", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"]["source_seconds"] == 3.0
    files[2] = ("first_clip", ("c.mp4", b"\x00\x00\x00\x18ftypmp42 broken", "video/mp4"))
    response = client.post("/v1/videos", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "first_clip"
