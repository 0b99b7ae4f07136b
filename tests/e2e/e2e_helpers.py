"""A real `wanserve serve` process on a free local port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

KEY_A, KEY_B = "key-a", "key-b"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server and how to restart or kill it."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    start: Callable[[], subprocess.Popen[bytes]]

    def kill(self) -> None:
        """SIGKILL the server and its worker processes, as a crash or OOM would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), as a deploy would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.process = self.start()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not become healthy:\n{log.read_text()[-3000:]}")


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts servers with extra environment; all are stopped after the test."""
    servers: list[Server] = []

    def make(workers: int = 1, **env: str) -> Server:
        port = free_port()
        data_dir = tmp_path / f"data-{port}"
        log = tmp_path / f"server-{port}.log"
        environment = {
            **os.environ,
            "WANSERVE_DATA_DIR": str(data_dir),
            "WANSERVE_MEDIA_ALLOWED_HOSTS": "127.0.0.1",
            "WANSERVE_API_KEYS": f"{KEY_A},{KEY_B}",
            "WANSERVE_ENCODER_PRESET": "ultrafast",
            "WANSERVE_JOB_LEASE": "3",
            "WANSERVE_POLL_INTERVAL": "0.1",
            "WANSERVE_POLL_AFTER_MS": "100",
            **env,
        }
        command = [sys.executable, "-m", "wanserve.cli", "serve", "--port", str(port)]
        command += ["--workers", str(workers)]

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as out:
                process = subprocess.Popen(
                    command,
                    env=environment,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            _wait_healthy(f"http://127.0.0.1:{port}", process, log)
            return process

        server = Server(f"http://127.0.0.1:{port}", data_dir, start(), start)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def wait_done(url: str, video_id: str, key: str = KEY_A, timeout: float = 120) -> dict:
    """Poll a video until it is completed or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = httpx.get(
            f"{url}/v1/videos/{video_id}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        if video["status"] in ("completed", "failed"):
            return video
        time.sleep(0.2)
    raise AssertionError(f"{video_id} did not finish: {video}")
