"""Byte ranges on `/content`: RFC 9110's answers, and every error in OpenAI's JSON shape.

A Range we do not understand is ignored (200, the whole file); a valid one that no part
of the file satisfies is a 416 with `Content-Range: bytes */size` and a JSON body. Before,
Starlette answered both with text/plain.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.api.ranges import MAX_RANGES, requested_ranges
from wanserve.errors import RangeNotSatisfiable
from wanserve.jobs.runtime import build_worker
from wanserve.settings import Settings


@pytest.mark.parametrize(
    ("header", "ranges"),
    [
        (None, None),
        ("bytes=0-99", [(0, 99)]),
        ("Bytes = 0-99", [(0, 99)]),
        ("bytes=-100", [(900, 999)]),
        ("bytes=-5000", [(0, 999)]),
        ("bytes=900-", [(900, 999)]),
        ("bytes=0-99999999999999999999", [(0, 999)]),
        ("bytes=0-1, 4-5", [(0, 1), (4, 5)]),
        ("bytes=2000-,0-1", [(0, 1)]),  # the unsatisfiable part is dropped
        # Not understood, so ignored (the whole file): RFC 9110 section 14.2.
        ("bytes=5-1", None),
        ("bytes=0-1,5-1", None),
        ("bytes=abc", None),
        ("bytes=1-2-3", None),
        ("bytes=-", None),
        ("bytes=", None),
        ("bytes=+1-2", None),
        ("items=0-1", None),
        ("garbage", None),
        (",".join(["bytes=0-0"] + ["2-2"] * MAX_RANGES), None),
    ],
)
def test_requested_ranges(header, ranges):
    assert requested_ranges(header, 1000) == ranges


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=1000-", 1000), ("bytes=1000-2000", 1000), ("bytes=-0", 1000), ("bytes=-5", 0)],
)
def test_requested_ranges_unsatisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable) as caught:
        requested_ranges(header, size)
    assert caught.value.size == size


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, media_server: str) -> Iterator[tuple]:
    """A client, a completed small video's content path, and the video's bytes."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("ranges") / "data",
        media_allowed_hosts=["127.0.0.1"],
        encoder_preset="ultrafast",
        workers=0,
    )
    app = create_app(settings, workers=0, fetcher=loopback_fetcher(settings))
    with TestClient(app) as client:
        video_id = client.post("/v1/videos", json=seed_body(media_server, size="320x240")).json()
        worker = build_worker(settings)
        assert worker.run_once()
        worker.registry.close()
        path = f"/v1/videos/{video_id['id']}/content"
        whole = client.get(path)
        assert whole.status_code == 200
        yield client, path, whole.content


def test_ranges_are_served(finished):
    client, path, whole = finished
    size = len(whole)
    first = client.get(path, headers={"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == whole[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    tail = client.get(path, headers={"Range": f"bytes={size - 10}-,{size + 5}-"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    both = client.get(path, headers={"Range": "bytes=0-1,10-11"})
    assert both.status_code == 206
    assert both.headers["content-type"].startswith("multipart/byteranges")


@pytest.mark.parametrize("header", ["bytes=5-1", "bytes=abc", "items=0-1", "bytes=", "garbage"])
def test_a_range_not_understood_is_ignored(finished, header):
    client, path, whole = finished
    answer = client.get(path, headers={"Range": header})
    assert answer.status_code == 200, answer.text
    assert answer.content == whole


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("spec", ["{size}-", "{size}-{more}", "-0"])
def test_an_unsatisfiable_range_is_a_json_416(finished, method, spec):
    client, path, whole = finished
    header = "bytes=" + spec.format(size=len(whole), more=len(whole) + 100)
    answer = client.request(method, path, headers={"Range": header})
    assert answer.status_code == 416
    assert answer.headers["content-range"] == f"bytes */{len(whole)}"
    assert answer.headers["content-type"] == "application/json"
    if method == "GET":
        assert answer.json()["error"]["code"] == "range_not_satisfiable"
        assert answer.json()["error"]["param"] == "Range"


def test_if_range_decides_whether_the_range_applies(finished):
    client, path, whole = finished
    etag = client.head(path).headers["etag"]
    beyond = f"bytes={len(whole)}-"
    stale = client.get(path, headers={"Range": beyond, "If-Range": '"another-version"'})
    assert stale.status_code == 200 and stale.content == whole
    current = client.get(path, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert current.status_code == 206 and current.content == whole[:10]
    assert client.get(path, headers={"Range": beyond, "If-Range": etag}).status_code == 416


def test_every_content_error_is_json(finished):
    client, path, _ = finished
    answers = [
        client.get(path, headers={"Range": "bytes=99999999-"}),
        client.get(path, params={"variant": "poster"}),
        client.get(path, params={"expires": "soon"}),
        client.get(path.replace("content", "nothing")),
        client.get("/v1/videos/video_missing/content"),
        client.put(path),
    ]
    assert [a.status_code for a in answers] == [416, 400, 400, 404, 404, 405]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]["message"]
