"""The polling path through a real server: many pollers at once, and what each poll costs.

Retrieve, list and the DashScope task fetch are `async def` routes that read the store
inline on SQLite (in the thread pool elsewhere): 100 pollers at once all get their 200s,
and a burst of polls reuses pooled SQLite connections instead of opening (and tuning with
PRAGMAs) one per request, which the profile of issue 11 found.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import event

from helpers import seed_body
from liveapp import live_app
from netguard import loopback_fetcher
from pgtools import throwaway_schema
from wanserve.api.app import create_app
from wanserve.jobs.runtime import open_store
from wanserve.settings import Settings

POLLERS = 100
KEY = {"Authorization": "Bearer poll-key"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def poll_settings(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """Keyed settings on SQLite (reads inline) or PostgreSQL (reads in the thread pool)."""
    keyed = settings.model_copy(update={"api_keys": ["poll-key"], "create_rate": 0})
    if request.param == "sqlite":
        yield keyed
        return
    with throwaway_schema() as url:
        yield keyed.model_copy(update={"database_url": url})


async def _poll_all(url: str, paths: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(paths), max_keepalive_connections=len(paths))
    async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=30, limits=limits) as http:
        return await asyncio.gather(*(http.get(path) for path in paths))


def test_a_hundred_concurrent_polls_all_answer_200(poll_settings: Settings, media_server: str):
    app = create_app(poll_settings, fetcher=loopback_fetcher(poll_settings), workers=0)
    with live_app(app) as url:
        created = httpx.post(
            f"{url}/v1/videos", json=seed_body(media_server), headers=KEY, timeout=60
        )
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        retrieve = [f"/v1/videos/{video_id}"] * POLLERS
        answers = asyncio.run(_poll_all(url, retrieve))
        assert [a.status_code for a in answers] == [200] * POLLERS
        assert {a.json()["id"] for a in answers} == {video_id}
        assert {a.headers["openai-poll-after-ms"] for a in answers} == {"2000"}
        mixed = ["/v1/videos?limit=20", f"/api/v1/tasks/{video_id}"] * (POLLERS // 2)
        answers = asyncio.run(_poll_all(url, mixed))
        assert [a.status_code for a in answers] == [200] * POLLERS
        assert {a.json()["data"][0]["id"] for a in answers[::2]} == {video_id}
        assert {a.json()["output"]["task_id"] for a in answers[1::2]} == {video_id}


def test_polls_reuse_pooled_sqlite_connections(settings: Settings, media_server: str):
    store = open_store(settings)
    opened: list[object] = []
    event.listen(store.engine, "connect", lambda connection, _record: opened.append(connection))
    app = create_app(settings, store=store, fetcher=loopback_fetcher(settings), workers=0)
    with live_app(app) as url:
        created = httpx.post(f"{url}/v1/videos", json=seed_body(media_server), timeout=60)
        video_id = created.json()["id"]
        before = len(opened)
        for _ in range(3):
            answers = asyncio.run(_poll_all(url, [f"/v1/videos/{video_id}"] * POLLERS))
            assert [a.status_code for a in answers] == [200] * POLLERS
    # Inline reads take one connection at a time: none is opened for the 300 polls (the
    # pool of 5 + 10 overflow opened and closed connections for most of them).
    assert len(opened) - before <= 1
