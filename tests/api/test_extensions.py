"""POST /v1/videos/extensions: the openai SDK's `videos.extend` with an uploaded clip, the
JSON form by id, and every way the request can be wrong."""

from __future__ import annotations

import io
from pathlib import Path

import av
import openai
import pytest
from openai.types import Video

from helpers import clip_bytes, completed_video, pan_frames, seed_body


@pytest.fixture(scope="module")
def clip_path(media_dir: Path) -> Path:
    path = media_dir / "extend-clip.mp4"
    path.write_bytes(clip_bytes(pan_frames(72), audio_freq=330))
    return path


@pytest.fixture
def sdk(client) -> openai.OpenAI:
    """The real openai SDK over the in-process app (TestClient is an httpx.Client)."""
    return openai.OpenAI(
        base_url="http://testserver/v1", api_key="open", http_client=client, max_retries=0
    )


def _seconds_of(content: bytes) -> tuple[float, float]:
    with av.open(io.BytesIO(content)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return count / float(stream.average_rate), float(stream.average_rate)


def test_sdk_extend_with_an_uploaded_clip(client, sdk, clip_path):
    with clip_path.open("rb") as clip:
        video = sdk.videos.extend(video=clip, prompt="the camera keeps going", seconds="4")
    assert video.status == "queued" and video.seconds == "4"
    assert video.model == "wan2.7-i2v" and video.size == "720P"
    raw = client.get(f"/v1/videos/{video.id}").json()
    assert raw["metadata"] == {"source_seconds": 3.0, "extended_from_video_id": None}
    assert raw["prompt"] == "the camera keeps going"


@pytest.mark.slow
def test_extend_a_completed_video_by_id(client, sdk, worker, media_server):
    source = client.post("/v1/videos", json=seed_body(media_server, seconds="3")).json()
    completed_video(client, source["id"])
    # The SDK's multipart encoder refuses a dict for `video`, so the by-id form goes as JSON.
    extended = sdk.post(
        "/videos/extensions",
        body={"video": {"id": source["id"]}, "prompt": "and further", "seconds": "2"},
        cast_to=Video,
    )
    assert extended.seconds == "2" and extended.size == "720P"
    video = completed_video(client, extended.id)
    assert video["metadata"] == {"source_seconds": 3.0, "extended_from_video_id": source["id"]}
    seconds, rate = _seconds_of(client.get(f"/v1/videos/{extended.id}/content").content)
    assert abs(seconds - 5.0) <= 1 / rate
    assert (video["width"], video["height"]) == (1280, 720)
    # The form spelling of the same reference (`video[id]`) is the same request.
    again = client.post(
        "/v1/videos/extensions",
        files=[("video[id]", (None, source["id"])), ("seconds", (None, "2"))],
    )
    assert again.status_code == 200, again.text
    assert again.json()["metadata"]["extended_from_video_id"] == source["id"]


def test_by_id_needs_a_completed_video_of_this_key(client, media_server):
    queued = client.post("/v1/videos", json=seed_body(media_server)).json()
    response = client.post(
        "/v1/videos/extensions", json={"video": {"id": queued["id"]}, "seconds": "2"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "video_not_ready"
    assert response.json()["error"]["param"] == "video"
    response = client.post(
        "/v1/videos/extensions", json={"video": {"id": "video_nope"}, "seconds": "2"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "video"


BAD = {
    "no video": ({"prompt": "x", "seconds": "2"}, 400, "video"),
    "video not an object": ({"video": "video_1", "seconds": "2"}, 400, "video"),
    "id not text": ({"video": {"id": 5}, "seconds": "2"}, 400, "video.id"),
    "seconds": ({"video": {"id": "video_1"}, "seconds": "16"}, 400, "seconds"),
}


@pytest.mark.parametrize(("body", "status", "param"), BAD.values(), ids=BAD.keys())
def test_bad_json_bodies(client, body, status, param):
    response = client.post("/v1/videos/extensions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_bad_uploads_name_the_video_part(client, sdk, clip_path, media_dir):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.videos.extend(video=(media_dir / "wide-first.png").open("rb"), prompt="x", seconds="4")
    assert caught.value.body["param"] == "video"  # type: ignore[index]
    files = [
        ("video", ("c.mp4", clip_path.read_bytes(), "video/mp4")),
        ("seconds", (None, "1")),
    ]
    response = client.post("/v1/videos/extensions", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "seconds"
    files = [("first_frame", ("c.png", b"x", "image/png"))]
    response = client.post("/v1/videos/extensions", files=files)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "first_frame"
