"""Scale-out through Redis: a server that only takes requests, and separate worker processes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from e2e_helpers import KEY_A, Server, wait_done
from kombu import Connection

from helpers import seed_body

pytestmark = [pytest.mark.slow, pytest.mark.services]

AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
QUEUE = "wanserve.wan2.7-i2v"


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database of its own (1-15), its wanserve queue deleted before and after."""
    url = f"redis://127.0.0.1:6379/{random.randint(1, 15)}"

    def drop_queue() -> None:
        with Connection(url) as connection:
            connection.default_channel.queue_delete(QUEUE)

    drop_queue()
    yield url
    drop_queue()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[Server, str], subprocess.Popen[bytes]]]:
    """Starts `wanserve worker` processes on a server's data dir; all are killed afterwards."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(server: Server, broker_url: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(processes)}.log"
        environment = {
            **os.environ,
            "WANSERVE_DATA_DIR": str(server.data_dir),
            "WANSERVE_BROKER_URL": broker_url,
            "WANSERVE_ENCODER_PRESET": "ultrafast",
            "WANSERVE_JOB_LEASE": "3",
            "WANSERVE_POLL_INTERVAL": "0.1",
        }
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "wanserve.cli", "worker"],
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append(process)
        deadline = time.monotonic() + 60
        while "consuming queue" not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        return process

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


def submit(server: Server, media_server: str, count: int, seconds: str = "2") -> list[str]:
    return [
        httpx.post(
            f"{server.url}/v1/videos",
            headers=AUTH_A,
            json=seed_body(media_server, seconds=seconds),
        ).json()["id"]
        for _ in range(count)
    ]


def job_rows(server: Server) -> dict[str, tuple[int, str]]:
    with sqlite3.connect(server.data_dir / "wanserve.db") as db:
        rows = db.execute("SELECT id, attempts, worker_id FROM jobs").fetchall()
    return {job_id: (attempts, worker_id) for job_id, attempts, worker_id in rows}


def test_six_jobs_two_broker_workers_each_run_exactly_once(
    server_factory, media_server, broker_url, start_worker
):
    server = server_factory(workers=0, WANSERVE_BROKER_URL=broker_url)
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["checks"]["queue"] == "ok", ready
    start_worker(server, broker_url)
    start_worker(server, broker_url)
    ids = submit(server, media_server, 6)
    for video_id in ids:
        assert wait_done(server.url, video_id)["status"] == "completed"
    rows = job_rows(server)
    assert {job_id: attempts for job_id, (attempts, _) in rows.items()} == dict.fromkeys(ids, 1)
    assert len({worker for _, worker in rows.values()}) == 2


@pytest.mark.parametrize(
    ("stop", "victim_attempts"),
    [(signal.SIGKILL, 2), (signal.SIGTERM, 1)],  # a stopping worker hands its job back
    ids=["sigkill", "sigterm"],
)
def test_a_worker_stopped_mid_job_loses_no_job(
    server_factory, media_server, broker_url, start_worker, stop, victim_attempts
):
    server = server_factory(workers=0, WANSERVE_BROKER_URL=broker_url)
    workers = [start_worker(server, broker_url) for _ in range(2)]
    ids = submit(server, media_server, 4, seconds="4")
    deadline = time.monotonic() + 60
    while True:
        with sqlite3.connect(server.data_dir / "wanserve.db") as db:
            running = db.execute(
                "SELECT id, worker_id FROM jobs WHERE status = 'in_progress' AND progress > 0"
            ).fetchall()
        if running:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    victim_job, victim_worker = running[0]
    pid = int(victim_worker.split(":")[1])
    assert pid in {w.pid for w in workers}
    os.kill(pid, stop)
    for video_id in ids:
        assert wait_done(server.url, video_id, timeout=180)["status"] == "completed"
    attempts = {job_id: n for job_id, (n, _) in job_rows(server).items()}
    assert attempts.pop(victim_job) == victim_attempts
    assert attempts == dict.fromkeys(set(ids) - {victim_job}, 1)


def test_serve_with_a_broker_runs_jobs_in_its_own_workers(server_factory, media_server, broker_url):
    server = server_factory(workers=1, WANSERVE_BROKER_URL=broker_url)
    (video_id,) = submit(server, media_server, 1)
    assert wait_done(server.url, video_id)["status"] == "completed"
    assert job_rows(server)[video_id][0] == 1
