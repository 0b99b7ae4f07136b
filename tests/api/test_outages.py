"""The HTTP API under concurrent clients and faults: one job per key, the cap, 503s.

Concurrent creates go through a real uvicorn server, on SQLite and on PostgreSQL. A
database that is really down (a PostgreSQL of the test's own, stopped and started again)
and a full disk (an 8 MB tmpfs) answer 503 with `Retry-After`, never 500, and recover.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from helpers import LogWatch, race, seed_body
from liveapp import live_app
from netguard import loopback_fetcher
from pgtools import POSTGRES_URL, OwnPostgres
from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker
from wanserve.settings import Settings
from wanserve.storage.local import LocalStorage

THREADS = 24
SMALL = {"size": "320x240", "seconds": "2"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def database_settings(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Settings]:
    """The test settings with creates unthrottled, on SQLite or a throw-away PostgreSQL schema."""
    unthrottled = settings.model_copy(update={"create_rate": 0})
    if request.param == "sqlite":
        yield unthrottled
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    yield unthrottled.model_copy(update={"database_url": url})
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def job_dirs(settings: Settings) -> set[str]:
    """The job folders in the stored files."""
    root = settings.data_dir / "files" / "jobs"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def test_concurrent_creates_with_one_idempotency_key_answer_one_job(
    database_settings: Settings, media_server: str
):
    settings = database_settings
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    body = seed_body(media_server, **SMALL)
    with live_app(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        ids = []
        for round_ in range(3):
            headers = {"Idempotency-Key": f"key-{round_}"}

            def create(_: int, headers: dict[str, str] = headers) -> httpx.Response:
                return http.post("/v1/videos", json=body, headers=headers)

            answers = race(THREADS, create)
            assert [a.status_code for a in answers] == [200] * THREADS, answers[0].text
            assert len({a.json()["id"] for a in answers}) == 1
            ids.append(answers[0].json()["id"])
        listed = http.get("/v1/videos").json()["data"]
        assert sorted(v["id"] for v in listed) == sorted(ids)
    assert job_dirs(settings) == set(ids)  # the copies that lost left no files


def test_the_unfinished_cap_holds_for_concurrent_creates(
    database_settings: Settings, media_server: str
):
    settings = database_settings.model_copy(update={"max_unfinished_jobs": 3})
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    body = seed_body(media_server, **SMALL)
    with live_app(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        for _ in range(2):
            answers = race(20, lambda _: http.post("/v1/videos", json=body))
            admitted = [a.json()["id"] for a in answers if a.status_code == 200]
            refused = [a for a in answers if a.status_code != 200]
            assert len(admitted) == 3
            assert {(a.status_code, a.json()["error"]["code"]) for a in refused} == {
                (429, "too_many_unfinished_jobs")
            }
            assert job_dirs(settings) >= set(admitted)
            for video_id in admitted:  # room for the next round
                assert http.post(f"/v1/videos/{video_id}/cancel").status_code == 200
    assert len(job_dirs(settings)) == 6


# -- the database really down --------------------------------------------------------


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    """A PostgreSQL server of this module's own, which its tests stop and start."""
    try:
        server = OwnPostgres()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a PostgreSQL server here: {exc}")
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.mark.services
@pytest.mark.slow
def test_a_stopped_database_is_503_with_retry_after_and_the_service_recovers(
    own_postgres: OwnPostgres,
    settings: Settings,
    media_server: str,
    outages: LogWatch,
    watch_logs: Callable[[str], LogWatch],
):
    settings = settings.model_copy(
        update={"database_url": own_postgres.url, "create_rate": 0, "admin_key": SecretStr("admin")}
    )
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    worker = build_worker(settings)
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    with TestClient(app) as client:
        video_id = client.post("/v1/videos", json=seed_body(media_server, **SMALL)).json()["id"]
        completed = watch_logs(f"job {video_id}: completed")
        own_postgres.stop()
        try:
            worker_thread.start()  # it finds the database down and waits
            for method, path in [
                ("GET", f"/v1/videos/{video_id}"),
                ("GET", "/v1/videos"),
                ("POST", f"/v1/videos/{video_id}/cancel"),
                ("DELETE", f"/v1/videos/{video_id}"),
            ]:
                answer = client.request(method, path)
                assert answer.status_code == 503, (path, answer.text)
                assert int(answer.headers["retry-after"]) >= 1
                error = answer.json()["error"]
                assert (error["code"], error["type"]) == ("service_unavailable", "server_error")
            created = client.post("/v1/videos", json=seed_body(media_server, **SMALL))
            assert created.status_code == 503 and "retry-after" in created.headers
            fleet = client.get("/v1/workers", headers={"Authorization": "Bearer admin"})
            assert fleet.status_code == 503 and "retry-after" in fleet.headers
            task = client.get(f"/api/v1/tasks/{video_id}")
            assert task.status_code == 503 and task.json()["code"] == "ServiceUnavailable"
            assert set(task.json()) == {"request_id", "code", "message"}
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"database": "error: unreachable", "storage": "ok"}
            assert outages.seen(1) and worker_thread.is_alive()
        finally:
            own_postgres.start()
        assert client.get(f"/v1/videos/{video_id}").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert completed.seen(1)  # the waiting worker ran it
        assert worker_thread.is_alive()
    worker.stopping.set()
    worker_thread.join(timeout=30)
    worker.registry.close()


# -- a full disk -----------------------------------------------------------------------


class FullDisk(LocalStorage):
    """Local storage on a disk with no room left."""

    def check(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_readyz_names_a_full_storage_disk(settings: Settings):
    storage = FullDisk(settings.data_dir / "files")
    with TestClient(create_app(settings, storage=storage, workers=0)) as client:
        ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "ok", "storage": "error: disk full"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs mounted for the test (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the ENOSPC doubles cover the rest)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; the file."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


@pytest.mark.slow
def test_a_full_disk_is_503_delete_frees_space_and_workers_wait(
    small_disk: Path, settings: Settings, media_server: str, watch_logs: Callable[[str], LogWatch]
):
    settings = settings.model_copy(
        update={"data_dir": small_disk / "data", "create_rate": 0, "max_attempts": 1000}
    )
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    body = seed_body(media_server, **SMALL)
    with TestClient(app) as client:
        done = client.post("/v1/videos", json=body).json()["id"]
        worker = build_worker(settings)
        assert worker.run_once()
        waiting = client.post("/v1/videos", json=body).json()["id"]
        ballast = fill(small_disk)

        ready = client.get("/readyz")
        assert ready.status_code == 503
        full = "error: disk full"
        assert ready.json()["checks"] == {"database": full, "storage": full}
        refused = client.post("/v1/videos", json=body)
        assert refused.status_code == 503 and "retry-after" in refused.headers
        assert client.get(f"/v1/videos/{done}").json()["status"] == "completed"

        # The worker meets the full disk (its claim, or the output it stores) and waits.
        no_room = watch_logs("job store unavailable|no space left, back to the queue")
        completed = watch_logs(f"job {waiting}: completed")
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert no_room.seen(2) and thread.is_alive()

        assert client.delete(f"/v1/videos/{done}").status_code == 200  # frees its files
        assert client.get(f"/v1/videos/{done}").status_code == 404
        ballast.unlink()
        assert completed.seen(1)
        assert thread.is_alive()
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/videos", json=body).status_code == 200
    worker.stopping.set()
    thread.join(timeout=30)
    worker.registry.close()
