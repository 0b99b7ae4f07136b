"""`serve` and two `worker` processes started at the same moment on a new database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from e2e_helpers import free_port

from pgtools import fresh_database

pytestmark = [pytest.mark.slow, pytest.mark.services]


def _wait_for(condition, what: str, processes: list[subprocess.Popen[bytes]], logs: list[Path]):
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        exited = [p.args for p in processes if p.poll() is not None]
        if exited:
            tails = "\n".join(log.read_text()[-2000:] for log in logs)
            raise AssertionError(f"exited before {what}: {exited}\n{tails}")
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize("round_", range(2))
def test_serve_and_two_workers_started_together_all_come_up(tmp_path: Path, round_: int):
    with fresh_database() as database_url:
        environment = {
            **os.environ,
            "WANSERVE_DATABASE_URL": database_url,
            "WANSERVE_DATA_DIR": str(tmp_path / "data"),
            "WANSERVE_POLL_INTERVAL": "0.1",
        }
        port = free_port()
        cli = [sys.executable, "-m", "wanserve.cli"]
        commands = [
            [*cli, "serve", "--port", str(port), "--workers", "0"],
            [*cli, "worker"],
            [*cli, "worker"],
        ]
        logs = [tmp_path / f"process-{i}.log" for i in range(len(commands))]
        processes = []
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
                )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for(lambda: _healthy(url), "serve is ready", processes, logs)
            for log in logs[1:]:
                _wait_for(
                    lambda log=log: "started" in log.read_text(), "a worker runs", processes, logs
                )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        # uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert processes[0].returncode in (0, -signal.SIGTERM), logs[0].read_text()
        assert [p.returncode for p in processes[1:]] == [0, 0], [log.read_text() for log in logs]
