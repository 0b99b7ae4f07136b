"""`first_clip` on the DashScope-compatible create: `duration` counts the clip, as there."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import clip_bytes, pan_frames

SYNTHESIS = "/api/v1/services/aigc/video-generation/video-synthesis"
ASYNC = {"X-DashScope-Async": "enable"}


@pytest.fixture(scope="module")
def clip(media_dir: Path) -> str:
    (media_dir / "ds-clip.mp4").write_bytes(clip_bytes(pan_frames(72)))  # 3 s
    return "ds-clip.mp4"


def _body(base: str, media: list[tuple[str, str]], duration: int) -> dict[str, object]:
    return {
        "model": "wan2.7-i2v",
        "input": {
            "prompt": "the camera keeps going",
            "media": [{"type": kind, "url": f"{base}/{name}"} for kind, name in media],
        },
        "parameters": {"resolution": "720P", "duration": duration},
    }


def test_first_clip_and_last_frame_make_the_rest_of_the_duration(client, media_server, clip):
    media = [("first_clip", clip), ("last_frame", "wide-last.png")]
    answer = client.post(SYNTHESIS, json=_body(media_server, media, 8), headers=ASYNC)
    assert answer.status_code == 200, answer.text
    task_id = answer.json()["output"]["task_id"]
    video = client.get(f"/v1/videos/{task_id}").json()
    assert video["seconds"] == "5"  # 8 s in all, 3 of them the clip
    assert video["metadata"]["source_seconds"] == 3.0


def test_a_duration_the_clip_fills_is_a_400_naming_it(client, media_server, clip):
    answer = client.post(
        SYNTHESIS, json=_body(media_server, [("first_clip", clip)], 4), headers=ASYNC
    )
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "InvalidParameter"
    assert "parameters.duration" in body["message"] and "first_clip" in body["message"]


@pytest.mark.parametrize(
    "media",
    [
        [("first_frame", "wide-first.png"), ("first_clip", "ds-clip.mp4")],
        [("first_clip", "ds-clip.mp4"), ("first_clip", "ds-clip.mp4")],
        [("last_frame", "wide-last.png"), ("driving_audio", "audio.wav")],
    ],
)
def test_invalid_sets_are_a_400_naming_media(client, media_server, clip, media):
    answer = client.post(SYNTHESIS, json=_body(media_server, media, 8), headers=ASYNC)
    assert answer.status_code == 400
    assert "media" in answer.json()["message"]
