"""The whole service on S3 storage: intake, worker, presigned video URLs, remix, delete."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker
from wanserve.settings import Settings


@pytest.fixture
def s3_settings(settings: Settings, s3_url: str) -> Settings:
    return settings.model_copy(update={"storage_url": s3_url})


@pytest.fixture
def s3_client(s3_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings, workers=0)) as test_client:
        yield test_client


def run_one_job(settings: Settings) -> None:
    """Run the next queued job in this thread, as a worker on another machine would."""
    worker = build_worker(settings)
    try:
        assert worker.run_once(), "a job was queued"
    finally:
        worker.registry.close()


def is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def test_a_job_on_s3_storage(s3_client, s3_settings, s3_endpoint, bucket, media_server, list_keys):
    assert s3_client.get("/readyz").json()["checks"]["storage"] == "ok"
    body = seed_body(media_server, audio=True, size="640x480")
    video_id = s3_client.post("/v1/videos", json=body).json()["id"]
    prefix = f"tenant-a/jobs/{video_id}/"
    media = list_keys(prefix)
    assert len(media) == 3, "both frames and the audio are in the bucket before the answer"

    run_one_job(s3_settings)
    video = s3_client.get(f"/v1/videos/{video_id}").json()
    assert video["status"] == "completed", video
    outputs = [key for key in list_keys(prefix) if "/output/" in key]
    assert [key.rsplit("/", 1)[-1] for key in outputs] == [
        "spritesheet.jpg",
        "thumbnail.webp",
        "video.mp4",
    ]

    # The video object points straight at the bucket, valid until the video expires.
    url = video["video_url"]
    assert url.startswith(f"{s3_endpoint}/{bucket}/{prefix}output/video.mp4?")
    assert "X-Amz-Expires=86400" in url
    download = httpx.get(url)
    assert download.status_code == 200
    assert download.headers["content-type"] == "video/mp4"
    assert is_mp4(download.content)

    # The content route sends clients to the bucket as well.
    for variant, content_type in (("video", "video/mp4"), ("thumbnail", "image/webp")):
        answer = s3_client.get(
            f"/v1/videos/{video_id}/content", params={"variant": variant}, follow_redirects=False
        )
        assert answer.status_code == 307
        location = answer.headers["location"]
        assert urlparse(location).netloc == urlparse(s3_endpoint).netloc
        fetched = httpx.get(location)
        assert fetched.status_code == 200
        assert fetched.headers["content-type"] == content_type
    assert (
        httpx.get(
            s3_client.get(f"/v1/videos/{video_id}/content", follow_redirects=False).headers[
                "location"
            ]
        ).content
        == download.content
    )

    # A remix copies the source's media inside the bucket.
    remix = s3_client.post(f"/v1/videos/{video_id}/remix", json={"prompt": "A dog."}).json()
    assert len(list_keys(f"tenant-a/jobs/{remix['id']}/")) == 3

    assert s3_client.delete(f"/v1/videos/{video_id}").status_code == 200
    assert list_keys(prefix) == []
    assert httpx.get(url).status_code in (403, 404), "S3 answers 403 without list rights"
    assert len(list_keys(f"tenant-a/jobs/{remix['id']}/")) == 3, "the remix keeps its media"


def dead_bucket(settings: Settings, bucket: str) -> Settings:
    """The same settings with the bucket's endpoint on a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return settings.model_copy(
        update={"storage_url": f"s3://{bucket}/tenant-a?endpoint_url=http://127.0.0.1:{port}"}
    )


def test_a_bucket_out_of_reach_is_503_and_fails_no_job_early(
    s3_client, s3_settings, bucket, media_server
):
    created = s3_client.post("/v1/videos", json=seed_body(media_server, size="320x240"))
    video_id = created.json()["id"]
    away = dead_bucket(s3_settings, bucket).model_copy(update={"max_attempts": 2})
    with TestClient(create_app(away, workers=0)) as client:
        refused = client.post("/v1/videos", json=seed_body(media_server))
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert client.delete(f"/v1/videos/{video_id}").status_code == 503
        worker = build_worker(away)
        try:
            assert worker.run_once()
            first = client.get(f"/v1/videos/{video_id}").json()
            assert first["status"] == "queued"  # back in the queue, not an engine error
            assert worker.run_once()
        finally:
            worker.registry.close()
        video = client.get(f"/v1/videos/{video_id}").json()
        assert (video["status"], video["error"]["code"]) == ("failed", "storage_error")


def test_content_ranges_on_s3_storage(s3_client, s3_settings, media_server):
    body = seed_body(media_server, size="320x240")
    video_id = s3_client.post("/v1/videos", json=body).json()["id"]
    run_one_job(s3_settings)
    path = f"/v1/videos/{video_id}/content"
    whole = httpx.get(s3_client.get(path, follow_redirects=False).headers["location"]).content

    # Unsatisfiable: answered here, as for local files, in our JSON shape.
    beyond = s3_client.get(path, headers={"Range": f"bytes={len(whole)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(whole)}"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"

    # Satisfiable, or not understood: the bucket serves it.
    for header, status, content in (("bytes=0-9", 206, whole[:10]), ("bytes=5-1", 200, whole)):
        answer = s3_client.get(path, headers={"Range": header}, follow_redirects=False)
        assert answer.status_code == 307
        fetched = httpx.get(answer.headers["location"], headers={"Range": header})
        assert (fetched.status_code, fetched.content) == (status, content), header
