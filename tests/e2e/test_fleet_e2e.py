"""A fleet end to end: `wanserve worker --models` processes with and without a broker, the
registry dropping a killed worker, and overflow to the hosted provider (the local fake)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from e2e_helpers import KEY_A, Server, wait_done
from fastapi.testclient import TestClient
from kombu import Connection

from fakes.provider import API_KEY, FakeProvider
from helpers import seed_body
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker
from wanserve.settings import Settings

pytestmark = pytest.mark.slow

ADMIN_KEY = "admin-secret"
MODELS = {"wan-a": {"engine": "keyframe"}, "wan-b": {"engine": "keyframe"}}
FAST = {"poll_interval": 0.02, "max_poll_interval": 0.05, "retry_backoff": 0.01}


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of its own (1-15), the models' queues deleted before and after."""
    url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"

    def drop_queues() -> None:
        with Connection(url) as connection:
            for model in MODELS:
                connection.default_channel.queue_delete(f"wanserve.{model}")

    drop_queues()
    yield url
    drop_queues()


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[Callable[..., list[subprocess.Popen[bytes]]]]:
    """Starts one `wanserve worker --models M` per M at once on a server's data dir."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(server: Server, *models: str, **env: str) -> list[subprocess.Popen[bytes]]:
        environment = {
            **os.environ,
            "WANSERVE_DATA_DIR": str(server.data_dir),
            "WANSERVE_MODELS": json.dumps(MODELS),
            "WANSERVE_ENCODER_PRESET": "ultrafast",
            "WANSERVE_JOB_LEASE": "3",
            "WANSERVE_POLL_INTERVAL": "0.1",
            **env,
        }
        started = []
        for model in models:
            log = tmp_path / f"worker-{model}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "wanserve.cli", "worker", "--models", model],
                    env=environment,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            process.log = log  # type: ignore[attr-defined]
            started.append(process)
        processes.extend(started)
        deadline = time.monotonic() + 60
        for model, process in zip(models, started, strict=True):
            log = process.log  # type: ignore[attr-defined]
            while f"serves {model}" not in log.read_text():
                assert process.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        return started

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def workers_of(server: Server) -> list[dict]:
    answer = httpx.get(f"{server.url}/v1/workers", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


@pytest.mark.parametrize("broker", [None, pytest.param("redis", marks=pytest.mark.services)])
def test_workers_of_two_models_take_only_their_own_jobs(
    server_factory, media_server, start_workers, broker, request
):
    env = {"WANSERVE_BROKER_URL": request.getfixturevalue("redis_url")} if broker else {}
    server = server_factory(
        workers=0, WANSERVE_MODELS=json.dumps(MODELS), WANSERVE_ADMIN_KEY=ADMIN_KEY, **env
    )
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["warnings"] == [
        "model wan-a has no live worker",
        "model wan-b has no live worker",
        "model wan2.7-i2v has no live worker",
    ]
    worker_a, worker_b = start_workers(server, "wan-a", "wan-b", **env)
    small = {"size": "320x240"}
    ids = {
        httpx.post(
            f"{server.url}/v1/videos",
            headers={"Authorization": f"Bearer {KEY_A}"},
            json=seed_body(media_server, model=model, **small),
        ).json()["id"]: model
        for model in ["wan-a", "wan-b", "wan-a", "wan-b"]
    }
    for video_id in ids:
        assert wait_done(server.url, video_id)["status"] == "completed"
    pids = {"wan-a": worker_a.pid, "wan-b": worker_b.pid}
    with sqlite3.connect(server.data_dir / "wanserve.db") as db:
        rows = db.execute("SELECT id, worker_id, attempts FROM jobs").fetchall()
    for job_id, worker_id, attempts in rows:
        assert int(worker_id.split(":")[1]) == pids[ids[job_id]] and attempts == 1
    listed = {w["pid"]: w for w in workers_of(server)}
    assert listed[worker_a.pid]["models"] == ["wan-a"]
    assert listed[worker_a.pid]["engines"] == {"wan-a": "loaded"}  # never wan-b's engine
    assert "model wan-b" not in worker_a.log.read_text()  # type: ignore[attr-defined]
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["models"]["wan-a"]["workers"] == 1 and ready["models"]["wan-a"]["loaded"] == 1
    assert ready["warnings"] == ["model wan2.7-i2v has no live worker"]

    if broker:
        return
    os.kill(worker_b.pid, signal.SIGKILL)  # no goodbye: its beats stop
    deadline = time.monotonic() + 30
    while worker_b.pid in {w["pid"] for w in workers_of(server)}:
        assert time.monotonic() < deadline, "a dead worker stayed listed"
        time.sleep(0.2)
    assert [w["pid"] for w in workers_of(server)] == [worker_a.pid]


def test_an_unclaimed_job_overflows_to_the_hosted_provider_and_runs_once(
    tmp_path, media_server
):
    with FakeProvider() as fake:
        settings = Settings(
            data_dir=tmp_path / "data",
            media_allowed_hosts=["127.0.0.1"],
            poll_interval=0.05,
            encoder_preset="ultrafast",
            workers=0,
            job_lease=3,
            models={
                # No worker serves wan-gpu here: its jobs go to the provider after 1 s.
                "wan-gpu": {"engine": "keyframe", "overflow": "wan-hosted", "max_wait": 1},
                "wan-hosted": {
                    "engine": "dashscope",
                    "api_key": API_KEY,
                    "base_url": fake.base_url,
                    **FAST,
                },
            },
            worker_models=["wan-hosted"],
        )
        app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
        # Two hosted workers, each moving overdue jobs and claiming: the job still runs once.
        workers = [build_worker(settings) for _ in range(2)]
        threads = [threading.Thread(target=w.consume, daemon=True) for w in workers]
        for thread in threads:
            thread.start()
        try:
            with TestClient(app) as client:
                created = client.post("/v1/videos", json=seed_body(media_server, model="wan-gpu"))
                video = created.json()
                assert video["engine"] == "keyframe" and video["overflow"] is None
                deadline = time.monotonic() + 60
                while video["status"] not in ("completed", "failed"):
                    assert time.monotonic() < deadline, video
                    time.sleep(0.05)
                    video = client.get(f"/v1/videos/{video['id']}").json()
                store = client.app.state.services.store  # type: ignore[attr-defined]
                record = store.get(video["id"])
                attempts = record.attempts
                moved_after = record.metadata["overflow"]["waited_seconds"]
        finally:
            for worker in workers:
                worker.stopping.set()
            for worker, thread in zip(workers, threads, strict=True):
                thread.join(timeout=30)
                worker.registry.close()
        assert video["status"] == "completed", video
        assert video["model"] == "wan-gpu" and video["engine"] == "dashscope"
        overflow = video["overflow"]
        assert (overflow["from_model"], overflow["to_model"]) == ("wan-gpu", "wan-hosted")
        assert overflow["from_engine"] == "keyframe"
        assert len(fake.submissions) == 1 and attempts == 1
        assert moved_after >= 1  # seconds unclaimed before the move, in the job's metadata
