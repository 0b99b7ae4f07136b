"""A job's whole life through HTTP: create, progress, content, list, remix, cancel, delete."""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pytest
from PIL import Image

from helpers import seed_body

TERMINAL = {"completed", "failed"}


def wait_for(client, video_id: str, statuses=TERMINAL, timeout: float = 60.0, headers=None):
    """Poll until the video reaches one of `statuses`; returns the seen progress values too."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{video_id}", headers=headers).json()
        seen.append(video["progress"])
        if video["status"] in statuses:
            return video, seen
        time.sleep(0.05)
    raise AssertionError(f"video {video_id} stuck in {video['status']}")


def decode(data: bytes):
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        has_audio = bool(container.streams.audio)
        return video, frames, has_audio


def test_seed_request_completes_into_a_playable_mp4(client, worker, media_server, media_dir):
    created = client.post("/v1/videos", json=seed_body(media_server, audio=True)).json()
    video, progress = wait_for(client, created["id"])
    assert video["status"] == "completed", video
    assert video["progress"] == 100
    assert progress == sorted(progress), "progress never goes down"
    assert video["expires_at"] == video["completed_at"] + 24 * 3600
    assert video["video_url"].endswith(f"/v1/videos/{video['id']}/content")
    assert (video["width"], video["height"], video["fps"]) == (1280, 720, 24)
    assert "openai-poll-after-ms" not in client.get(f"/v1/videos/{video['id']}").headers

    content = client.get(f"/v1/videos/{video['id']}/content")
    assert content.headers["content-type"] == "video/mp4"
    stream, frames, has_audio = decode(content.content)
    assert (stream.codec_context.width, stream.codec_context.height) == (1280, 720)
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert abs(len(frames) - 48) <= 1
    assert has_audio
    first = np.asarray(Image.open(media_dir / "wide-first.png").convert("RGB").resize((1280, 720)))
    last = np.asarray(Image.open(media_dir / "wide-last.png").convert("RGB").resize((1280, 720)))
    assert np.abs(frames[0].astype(int) - first).mean() < 12
    assert np.abs(frames[-1].astype(int) - last).mean() < 12

    ranged = client.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100
    thumb = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert thumb.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.content)).format == "WEBP"
    sprite = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "spritesheet"})
    assert sprite.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("first", "size", "expected"),
    [
        ("tall-first.png", "720P", (720, 1280)),
        ("square-first.png", "720P", (960, 960)),
        ("wide-first.png", "640x480", (640, 480)),
    ],
)
def test_output_size_follows_the_first_frame(client, worker, media_server, first, size, expected):
    body = seed_body(media_server, size=size)
    body["media"][0]["url"] = f"{media_server}/{first}"
    body["media"][1]["url"] = f"{media_server}/{first.replace('first', 'last')}"
    created = client.post("/v1/videos", json=body).json()
    video, _ = wait_for(client, created["id"])
    assert video["status"] == "completed", video
    assert (video["width"], video["height"]) == expected
    _, frames, has_audio = decode(client.get(f"/v1/videos/{video['id']}/content").content)
    assert frames[0].shape[:2] == (expected[1], expected[0])
    assert not has_audio


def test_content_before_completion_is_video_not_ready(client, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    response = client.get(f"/v1/videos/{created['id']}/content")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "video_not_ready"


def test_cancel_a_queued_job_then_cancel_again(client, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    cancelled = client.post(f"/v1/videos/{created['id']}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "failed" and body["error"]["code"] == "cancelled"
    again = client.post(f"/v1/videos/{created['id']}/cancel")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "video_already_finished"


def test_cancel_a_running_job_stops_it(client, worker, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server, seconds="15")).json()
    wait_for(client, created["id"], statuses={"in_progress"})
    client.post(f"/v1/videos/{created['id']}/cancel")
    video, _ = wait_for(client, created["id"])
    assert video["status"] == "failed" and video["error"]["code"] == "cancelled"
    time.sleep(1.0)
    assert client.get(f"/v1/videos/{created['id']}").json()["error"]["code"] == "cancelled"


def test_delete_removes_job_and_files(client, worker, media_server, settings):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    wait_for(client, created["id"])
    deleted = client.delete(f"/v1/videos/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "video.deleted", "deleted": True}
    assert client.get(f"/v1/videos/{created['id']}").status_code == 404
    assert not (settings.data_dir / "files" / "jobs" / created["id"]).exists()


def test_delete_of_a_queued_job(client, media_server, settings):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    assert client.delete(f"/v1/videos/{created['id']}").status_code == 200
    assert client.get(f"/v1/videos/{created['id']}").status_code == 404


def test_remix_keeps_seed_and_media_and_changes_the_prompt(client, worker, media_server):
    source = client.post("/v1/videos", json=seed_body(media_server, seed=42)).json()
    not_ready = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "again"})
    assert not_ready.status_code == 400 and not_ready.json()["error"]["code"] == "video_not_ready"
    wait_for(client, source["id"])
    remix = client.post(f"/v1/videos/{source['id']}/remix", json={"prompt": "a dog"}).json()
    assert remix["remixed_from_video_id"] == source["id"]
    assert remix["seed"] == 42 and remix["prompt"] == "a dog" and remix["size"] == "720P"
    done, _ = wait_for(client, remix["id"])
    assert done["status"] == "completed"
    a = client.get(f"/v1/videos/{source['id']}/content").content
    b = client.get(f"/v1/videos/{remix['id']}/content").content
    frames_a, frames_b = decode(a)[1], decode(b)[1]
    assert np.array_equal(frames_a[len(frames_a) // 2], frames_b[len(frames_b) // 2])


def test_list_pagination_and_order(client, media_server):
    ids = [client.post("/v1/videos", json=seed_body(media_server)).json()["id"] for _ in range(3)]
    page = client.get("/v1/videos", params={"limit": 2}).json()
    assert page["object"] == "list" and page["has_more"]
    assert [v["id"] for v in page["data"]] == ids[::-1][:2]
    assert page["first_id"] == ids[2] and page["last_id"] == ids[1]
    rest = client.get("/v1/videos", params={"limit": 2, "after": page["last_id"]}).json()
    assert [v["id"] for v in rest["data"]] == [ids[0]] and not rest["has_more"]
    ascending = client.get("/v1/videos", params={"order": "asc"}).json()
    assert [v["id"] for v in ascending["data"]] == ids
    bad = client.get("/v1/videos", params={"after": "video_nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "after"
    bad_params = [({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"order": "x"}, "order")]
    for params, param in bad_params:
        response = client.get("/v1/videos", params=params)
        assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_idempotency_key(client, media_server):
    headers = {"Idempotency-Key": "abc-123"}
    first = client.post("/v1/videos", json=seed_body(media_server), headers=headers).json()
    again = client.post("/v1/videos", json=seed_body(media_server), headers=headers).json()
    assert again["id"] == first["id"]
    other = client.post("/v1/videos", json=seed_body(media_server, seconds="3"), headers=headers)
    assert other.status_code == 400
    assert other.json()["error"]["code"] == "idempotency_key_reused"


def test_unknown_routes_and_methods_keep_the_error_shape(client):
    missing = client.get("/v1/videos/video_missing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "video_not_found"
    nowhere = client.get("/v1/nothing-here")
    assert nowhere.status_code == 404 and "error" in nowhere.json()
    wrong_method = client.put("/v1/videos")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_models_health_and_readiness(client):
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert {"id": "wan2.7-i2v", "object": "model"}.items() <= models["data"][0].items()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
    metrics = client.get("/metrics").text
    assert "process_cpu_seconds_total" in metrics
    assert 'wanserve_jobs{status="queued"} 0.0' in metrics


def test_metrics_count_jobs_and_requests(client, media_server):
    client.post("/v1/videos", json=seed_body(media_server))
    client.get("/v1/videos/video_nope")
    metrics = client.get("/metrics").text
    assert 'wanserve_jobs{status="queued"} 1.0' in metrics
    assert 'wanserve_jobs_created_total{api="openai",model="wan2.7-i2v"} 1.0' in metrics
    assert 'route="/v1/videos/{video_id}",status="404"' in metrics


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Bearer m\u00e9trique", 401),  # non-ASCII: a TypeError (500) in a naive compare_digest
        ("bearer  scrape-key ", 200),
        ("Bearer scrape-key", 200),
    ],
)
def test_metrics_key_is_checked(settings, authorization, status):
    from fastapi.testclient import TestClient

    from wanserve.api.app import create_app

    settings.metrics_key = "scrape-key"
    headers = {"authorization": authorization.encode()} if authorization else {}
    with TestClient(create_app(settings, workers=0)) as client:
        answer = client.get("/metrics", headers=headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.json()["error"]["message"] == "This endpoint needs the metrics key."


def test_playground_page_is_public(settings):
    from fastapi.testclient import TestClient

    from wanserve.api.app import create_app

    settings.api_keys = ["secret"]
    with TestClient(create_app(settings, workers=0)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="static/main.js"' in page.text
        script = client.get("/static/main.js")  # the page's scripts need no key either
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert client.get("/playground/config").status_code == 200
        assert client.get("/v1/videos").status_code == 401


def test_video_url_is_signed_when_keys_are_configured(settings, media_server):
    from fastapi.testclient import TestClient

    from wanserve.api.app import create_app
    from wanserve.jobs.runtime import build_worker

    settings.api_keys = ["key-a", "key-b"]
    auth = {"Authorization": "Bearer key-a"}
    with TestClient(create_app(settings, workers=0)) as client:
        created = client.post("/v1/videos", json=seed_body(media_server), headers=auth).json()
        build_worker(settings).run_once()
        video = client.get(f"/v1/videos/{created['id']}", headers=auth).json()
        url = video["video_url"]
        assert "signature=" in url and "expires=" in url
        anonymous = client.get(url)
        assert anonymous.status_code == 200 and anonymous.content[4:8] == b"ftyp"
        tampered = client.get(url.replace("signature=", "signature=0"))
        assert tampered.status_code == 401
        not_hex = client.get(url.split("signature=")[0] + "signature=%C3%A9")
        assert not_hex.status_code == 401, "was a 500: compare_digest refuses non-ASCII str"
        other = url.replace(created["id"], "video_" + "0" * 32)
        assert client.get(other).status_code == 401
        assert client.get(f"/v1/videos/{created['id']}/content").status_code == 401
        wrong_key = {"Authorization": "Bearer key-b"}
        assert (
            client.get(f"/v1/videos/{created['id']}/content", headers=wrong_key).status_code == 404
        )


def test_openapi_describes_the_real_schema(client):
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert {"CreateVideoBody", "MediaItem", "VideoObject", "ErrorBody"} <= set(schemas)
    create = document["paths"]["/v1/videos"]["post"]
    json_body = create["requestBody"]["content"]["application/json"]["schema"]
    assert json_body == {"$ref": "#/components/schemas/CreateVideoBody"}
    assert "multipart/form-data" in create["requestBody"]["content"]
    for operations in document["paths"].values():
        for operation in operations.values():
            assert "422" not in operation["responses"]
    assert client.get("/docs").status_code == 200


def test_head_on_content_for_players(client, worker, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    wait_for(client, created["id"])
    head = client.head(f"/v1/videos/{created['id']}/content")
    assert head.status_code == 200
    assert head.headers["accept-ranges"] == "bytes" and int(head.headers["content-length"]) > 0
    assert head.content == b""
