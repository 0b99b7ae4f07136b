"""Conditional requests: ETag + If-None-Match -> 304 on retrieve and content; HEAD on retrieve."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from helpers import seed_body
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.api.conditional import none_match
from wanserve.jobs.runtime import build_worker
from wanserve.settings import Settings


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ('"abc"', True),
        ('W/"abc"', True),  # weak comparison, as RFC 9110 asks for GET and HEAD
        ('"x", "abc"', True),
        ("*", True),
        ('"abd"', False),
        ("abc", False),  # unquoted: not the tag
    ],
)
def test_if_none_match(header, matches):
    headers = Headers({"if-none-match": header} if header else {})
    assert none_match(headers, '"abc"') is matches


def test_retrieve_answers_304_until_the_video_changes(client, media_server):
    video = client.post("/v1/videos", json=seed_body(media_server)).json()
    path = f"/v1/videos/{video['id']}"
    first = client.get(path)
    etag = first.headers["etag"]
    assert etag.startswith('"') and client.get(path).headers["etag"] == etag
    same = client.get(path, headers={"If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == etag
    assert same.headers["openai-poll-after-ms"] == "2000"  # still told when to ask again
    assert "content-length" not in same.headers or same.headers["content-length"] == "0"
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200

    client.app.state.services.store.set_progress(video["id"], 0)  # no change: same tag
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    cancelled = client.post(f"{path}/cancel")
    assert cancelled.status_code == 200
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "failed"
    assert changed.headers["etag"] != etag


def test_retrieve_etags_are_per_owner_and_a_404_has_none(settings, media_server):
    settings.api_keys = ["key-a", "key-b"]
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    with TestClient(app) as http:
        a = {"Authorization": "Bearer key-a"}
        video = http.post("/v1/videos", json=seed_body(media_server), headers=a).json()
        etag = http.get(f"/v1/videos/{video['id']}", headers=a).headers["etag"]
        other = http.get(
            f"/v1/videos/{video['id']}",
            headers={"Authorization": "Bearer key-b", "If-None-Match": etag},
        )
        assert other.status_code == 404 and "etag" not in other.headers
        assert "error" in other.json()


def test_head_on_retrieve_gives_the_headers_of_a_get(client, media_server):
    video = client.post("/v1/videos", json=seed_body(media_server)).json()
    path = f"/v1/videos/{video['id']}"
    got, head = client.get(path), client.head(path)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == "application/json"
    assert client.head(path, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
    assert client.head("/v1/videos/video_nope").status_code == 404
    assert "head" not in client.get("/openapi.json").json()["paths"]["/v1/videos/{video_id}"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, media_server: str) -> Iterator[tuple]:
    """A client and a completed small video's content path."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("conditional") / "data",
        media_allowed_hosts=["127.0.0.1"],
        encoder_preset="ultrafast",
        workers=0,
    )
    app = create_app(settings, workers=0, fetcher=loopback_fetcher(settings))
    with TestClient(app) as client:
        video = client.post("/v1/videos", json=seed_body(media_server, size="320x240")).json()
        worker = build_worker(settings)
        assert worker.run_once()
        worker.registry.close()
        yield client, f"/v1/videos/{video['id']}"


def test_content_answers_304_for_its_etag(finished):
    client, path = finished
    whole = client.get(f"{path}/content")
    etag = whole.headers["etag"]
    for method in (client.get, client.head):
        same = method(f"{path}/content", headers={"If-None-Match": etag})
        assert same.status_code == 304 and same.content == b""
        assert same.headers["etag"] == etag
    ranged = client.get(f"{path}/content", headers={"If-None-Match": '"old"', "Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == whole.content[:10]
    thumbnail = client.get(f"{path}/content?variant=thumbnail", headers={"If-None-Match": etag})
    assert thumbnail.status_code == 200  # another file, another tag


def test_a_completed_video_keeps_its_etag_until_it_expires(finished):
    client, path = finished
    etag = client.get(path).headers["etag"]
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
