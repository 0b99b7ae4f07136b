"""`GET /v1/videos/{id}/events` under a real uvicorn: progress climbs to `completed` with
the worker in another process (SQLite and PostgreSQL), heartbeats, resume, cap, shutdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from helpers import seed_body
from liveapp import live_app
from netguard import loopback_fetcher
from pgtools import fresh_database
from wanserve.api.app import create_app
from wanserve.settings import Settings


def read_events(response: httpx.Response) -> Iterator[dict[str, object]]:
    """The stream's events ({"id", "data"}) and comments ({"comment"}), as they arrive."""
    event: dict[str, object] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
        elif line.startswith("id: "):
            event["id"] = int(line[4:])
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line == "" and event:
            yield event
            event = {}


@contextmanager
def worker_process(settings: Settings, database_url: str | None) -> Iterator[None]:
    """`wanserve worker` in a process of its own on the same database and files."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "WANSERVE_DATA_DIR": str(settings.data_dir),
        "WANSERVE_ENCODER_PRESET": "ultrafast",
        "WANSERVE_POLL_INTERVAL": "0.05",
    }
    if database_url:
        env["WANSERVE_DATABASE_URL"] = database_url
    process = subprocess.Popen(
        [sys.executable, "-m", "wanserve.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.terminate()
        process.wait(30)


@contextmanager
def served(settings: Settings) -> Iterator[tuple[str, object]]:
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    with live_app(app) as url:
        yield url, app


def _database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    yield from _database(request)


@pytest.mark.slow
def test_progress_climbs_to_completed_with_the_worker_in_another_process(
    settings: Settings, media_server: str, database_url: str | None
):
    settings = settings.model_copy(update={"database_url": database_url})
    with served(settings) as (url, _app), httpx.Client(base_url=url, timeout=120) as http:
        video = http.post("/v1/videos", json=seed_body(media_server)).json()
        events = []
        with http.stream("GET", f"/v1/videos/{video['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            seen = read_events(stream)
            events.append(next(seen))  # queued, before any worker exists
            with worker_process(settings, database_url):
                events += [e for e in seen if "data" in e]
        final = http.get(f"/v1/videos/{video['id']}").json()
    datas = [e["data"] for e in events]
    assert datas[0]["status"] == "queued"
    assert datas[-1]["status"] == "completed" and datas[-1]["progress"] == 100
    assert datas[-1] == final  # the same object GET answers
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))
    progress = [d["progress"] for d in datas]
    assert progress == sorted(progress)
    climbing = {d["progress"] for d in datas if d["status"] == "in_progress"}
    assert len(climbing) >= 3


def test_heartbeats_cancel_ends_the_stream_and_resume_skips_what_was_seen(
    settings: Settings, media_server: str
):
    settings = settings.model_copy(update={"stream_heartbeat": 0.1})
    with served(settings) as (url, _app), httpx.Client(base_url=url, timeout=30) as http:
        video = http.post("/v1/videos", json=seed_body(media_server)).json()
        path = f"/v1/videos/{video['id']}/events"
        with http.stream("GET", path) as stream:
            seen = read_events(stream)
            first = next(seen)
            assert first["data"] == http.get(f"/v1/videos/{video['id']}").json()
            assert next(seen) == {"comment": "keep-alive"}
            http.post(f"/v1/videos/{video['id']}/cancel")
            rest = [e for e in seen if "data" in e]
        (last,) = rest
        assert last["data"]["status"] == "failed"
        assert last["data"]["error"]["code"] == "cancelled"
        with http.stream("GET", path, headers={"Last-Event-ID": str(last["id"])}) as stream:
            assert list(read_events(stream)) == []  # seen it all: closed at once
        with http.stream("GET", path, headers={"Last-Event-ID": str(first["id"])}) as stream:
            assert [e["id"] for e in read_events(stream)] == [last["id"]]
        assert http.get("/v1/videos/video_nosuch/events").status_code == 404


def test_a_key_has_a_cap_of_open_streams_and_shutdown_ends_them(
    settings: Settings, media_server: str
):
    settings = settings.model_copy(update={"max_streams_per_key": 1})
    with served(settings) as (url, app), httpx.Client(base_url=url, timeout=30) as http:
        video = http.post("/v1/videos", json=seed_body(media_server)).json()
        path = f"/v1/videos/{video['id']}/events"
        with http.stream("GET", path) as stream:
            seen = read_events(stream)
            next(seen)
            refused = http.get(path)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            started = time.monotonic()
            app.state.services.feed.close()  # what SIGTERM of `serve` does first
            assert list(seen) == []
            assert time.monotonic() - started < 5
        with http.stream("GET", path) as stream:  # its slot was given back
            assert stream.status_code == 200
