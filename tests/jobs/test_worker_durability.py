"""Worker behaviour that keeps jobs alive: full disks, expiry sweeps, engine failures."""

from __future__ import annotations

import errno
from pathlib import Path

from helpers import ManualClock, seed_body
from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.model import JobStatus
from wanserve.jobs.runtime import build_worker
from wanserve.jobs.store import JobStore
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings
from wanserve.storage.local import LocalStorage


class FlakyDisk(LocalStorage):
    """Local storage whose first `failures` output writes hit a full disk."""

    def __init__(self, root: Path, failures: int):
        super().__init__(root)
        self.failures = failures

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        if "/output/" in key and self.failures:
            self.failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        super().put_file(key, path, content_type)


def test_a_full_disk_sends_the_job_back_to_the_queue(client, settings, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    worker = build_worker(settings)
    worker.storage = FlakyDisk(settings.data_dir / "files", failures=1)
    worker.settings.poll_interval = 0.001
    assert worker.run_once()
    job = worker.store.get(created["id"])
    assert job.status is JobStatus.QUEUED and job.attempts == 1  # counted: no endless loop
    assert worker.run_once()
    assert client.get(f"/v1/videos/{created['id']}").json()["status"] == "completed"


def test_a_job_that_never_fits_fails_with_storage_error_after_the_attempt_limit(
    client, settings, media_server
):
    settings.max_attempts = 2
    body = seed_body(media_server, size="320x240")
    created = client.post("/v1/videos", json=body).json()
    worker = build_worker(settings)
    worker.storage = FlakyDisk(settings.data_dir / "files", failures=10**6)
    worker.settings.poll_interval = 0.001
    assert worker.run_once() and worker.store.get(created["id"]).status is JobStatus.QUEUED
    assert worker.run_once()
    assert not worker.run_once()  # nothing left to go round
    video = client.get(f"/v1/videos/{created['id']}").json()
    assert video["status"] == "failed" and video["error"]["code"] == "storage_error"
    assert worker.store.get(created["id"]).attempts == 2


def worker_on(settings: Settings, clock: ManualClock) -> Worker:
    """A worker on the test's database and files whose store runs on `clock`."""
    store = JobStore.open(settings.resolved_database_url, clock=clock)
    files = LocalStorage(settings.data_dir / "files")
    return Worker(settings, store, files, EngineRegistry(settings))


def test_expired_files_are_swept_and_content_says_so(client, settings, media_server, clock):
    settings.retention = 600
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    worker = worker_on(settings, clock)
    worker.run_once()
    video = client.get(f"/v1/videos/{created['id']}").json()
    assert video["expires_at"] - video["completed_at"] in (600, 601)
    worker.maintain(force=True)
    assert client.get(f"/v1/videos/{created['id']}/content").status_code == 200
    clock.advance(601)
    worker.maintain(force=True)
    output = settings.data_dir / "files" / "jobs" / created["id"] / "output"
    assert not output.exists() or not any(output.iterdir())
    response = client.get(f"/v1/videos/{created['id']}/content")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "video_expired"
    assert client.get(f"/v1/videos/{created['id']}").json()["status"] == "completed"


def test_an_engine_crash_fails_the_job_without_a_traceback(client, settings, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    worker = build_worker(settings)

    class Broken:
        name = "broken"

        def generate(self, request, context):
            raise RuntimeError("/secret/path exploded")

        def close(self) -> None:
            pass

    worker.registry._engines["wan2.7-i2v"] = Broken()
    worker.run_once()
    video = client.get(f"/v1/videos/{created['id']}").json()
    assert video["status"] == "failed"
    assert video["error"]["code"] == "engine_error"
    assert "/secret" not in video["error"]["message"]


class FullDisk(LocalStorage):
    """Local storage with no space left for anything."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_at_intake_is_a_503_and_leaves_nothing(settings, media_server):
    from fastapi.testclient import TestClient

    from wanserve.api.app import create_app

    storage = FullDisk(settings.data_dir / "files")
    with TestClient(create_app(settings, storage=storage, workers=0)) as client:
        response = client.post("/v1/videos", json=seed_body(media_server))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_full"
        assert client.get("/v1/videos").json()["data"] == []
    assert not any((settings.data_dir / "files").rglob("*.png"))
