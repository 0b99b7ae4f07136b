"""A job store that goes away while jobs run: nothing fails, nothing crashes, all complete."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import ManualClock, seed_body
from netguard import loopback_fetcher
from pgtools import fresh_database, terminate_backends
from wanserve.api.app import create_app
from wanserve.engines.registry import EngineRegistry
from wanserve.errors import StoreUnavailable
from wanserve.jobs.db import make_engine
from wanserve.jobs.model import JobStatus
from wanserve.jobs.runtime import build_worker
from wanserve.jobs.store import JobStore
from wanserve.jobs.worker import Worker
from wanserve.storage.layout import job_prefix, media_key
from wanserve.storage.local import LocalStorage

SMALL = {"size": "320x240", "seconds": "2"}
FINISHED = r"job \S+: (completed|failed with)"


class FlakyStore(JobStore):
    """The real store, but the named calls first fail `failures[name]` times as an outage."""

    def __init__(self, url: str, failures: dict[str, int]):
        super().__init__(make_engine(url))
        self.failures = failures

    def _outage(self, name: str) -> None:
        if self.failures.get(name, 0) > 0:
            self.failures[name] -= 1
            raise StoreUnavailable("injected outage", reason="unreachable")

    def set_progress(self, *args: Any, **kwargs: Any) -> None:
        self._outage("set_progress")
        super().set_progress(*args, **kwargs)

    def heartbeat(self, *args: Any, **kwargs: Any) -> bool:
        self._outage("heartbeat")
        return super().heartbeat(*args, **kwargs)

    def save_engine_state(self, *args: Any, **kwargs: Any) -> None:
        self._outage("save_engine_state")
        super().save_engine_state(*args, **kwargs)

    def transition(self, *args: Any, **kwargs: Any) -> Any:
        self._outage("transition")
        return super().transition(*args, **kwargs)

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        self._outage("claim")
        return super().claim(*args, **kwargs)


class SavingEngine:
    """The keyframe engine, saving resume state first as the upstream engines do."""

    name = "saving"

    def __init__(self, inner: Any):
        self.inner = inner

    def generate(self, request: Any, context: Any) -> Any:
        context.save_state({"upstream_task": "t-1"})
        return self.inner.generate(request, context)

    def close(self) -> None:
        self.inner.close()


def test_store_outages_during_a_job_never_fail_it(client, settings, media_server, outages):
    created = client.post("/v1/videos", json=seed_body(media_server, **SMALL)).json()
    store = FlakyStore(
        settings.resolved_database_url,
        {"set_progress": 10**6, "heartbeat": 3, "save_engine_state": 2, "transition": 2},
    )
    registry = EngineRegistry(settings)
    registry._engines["wan2.7-i2v"] = SavingEngine(registry.engine_for("wan2.7-i2v"))
    worker = Worker(settings, store, LocalStorage(settings.data_dir / "files"), registry)
    assert worker.run_once()
    job = store.get(created["id"])
    assert job.status is JobStatus.COMPLETED, job.error_message
    assert job.engine_state == {"upstream_task": "t-1"} and job.attempts == 1
    assert store.failures["save_engine_state"] == store.failures["transition"] == 0
    assert outages.count >= 4  # each retried call said so
    registry.close()


def test_the_worker_loop_waits_out_a_store_outage(
    settings, media_server, outages, watch_logs, client
):
    created = client.post("/v1/videos", json=seed_body(media_server, **SMALL)).json()
    finished = watch_logs(FINISHED)
    store = FlakyStore(settings.resolved_database_url, {"claim": 4})
    worker = Worker(
        settings, store, LocalStorage(settings.data_dir / "files"), EngineRegistry(settings)
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert outages.seen(4)
        assert finished.seen(1) and thread.is_alive()
        assert store.get(created["id"]).status is JobStatus.COMPLETED
    finally:
        worker.stopping.set()
        thread.join(timeout=30)
        worker.registry.close()
    assert not thread.is_alive()


def test_a_worker_on_a_database_that_refuses_keeps_waiting(settings, outages):
    settings = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/x"})
    worker = Worker(
        settings,
        JobStore(make_engine(settings.resolved_database_url)),
        LocalStorage(settings.data_dir / "files"),
        EngineRegistry(settings),
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert outages.seen(3)
    assert thread.is_alive()
    worker.stopping.set()
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.mark.services
@pytest.mark.slow
def test_killed_database_connections_mid_job_all_complete(settings, media_server, watch_logs):
    finished = watch_logs(FINISHED)
    with fresh_database() as url:
        settings = settings.model_copy(update={"database_url": url})
        app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
        with TestClient(app) as api:
            body = seed_body(media_server, **SMALL)
            ids = [api.post("/v1/videos", json=body).json()["id"] for _ in range(4)]
        app.state.services.store.engine.dispose()
        workers = [build_worker(settings) for _ in range(2)]
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        done, kills = threading.Event(), []

        def kill_connections() -> None:
            while not done.wait(0.03):
                kills.append(terminate_backends(url))

        killer = threading.Thread(target=kill_connections, daemon=True)
        for thread in [*threads, killer]:
            thread.start()
        try:
            assert finished.seen(len(ids), timeout=180)
        finally:
            done.set()
            for worker in workers:
                worker.stopping.set()
            for thread in [*threads, killer]:
                thread.join(timeout=30)
            for worker in workers:
                worker.registry.close()
                worker.store.engine.dispose()
        observer = JobStore(make_engine(url))
        jobs = [observer.get(job_id) for job_id in ids]
        observer.engine.dispose()
        assert [(job.status, job.error_code) for job in jobs] == [(JobStatus.COMPLETED, None)] * 4
        assert sum(kills) > 10  # connections really were cut while the jobs ran


def test_stored_media_without_a_job_are_swept_after_an_hour(client, settings, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    files = LocalStorage(settings.data_dir / "files")
    # What a create cut off between storing its media and inserting its row leaves.
    for orphan in ("video_orphan_old", "video_orphan_new"):
        files.put_bytes(media_key(orphan, "first_frame", "image/png"), b"png", "image/png")
    clock = ManualClock()
    clock.advance(3601)
    fresh = files.local_path(media_key("video_orphan_new", "first_frame", "image/png"))
    os.utime(fresh, (clock.now, clock.now))  # written just now, by the store's clock
    store = JobStore.open(settings.resolved_database_url, clock=clock)
    worker = Worker(settings, store, files, EngineRegistry(settings))
    worker.maintain(force=True)
    remaining = {p.name for p in (settings.data_dir / "files" / "jobs").iterdir()}
    assert remaining == {created["id"], "video_orphan_new"}
    assert files.size(job_prefix(created["id"]) + "media/first_frame.png") is not None
