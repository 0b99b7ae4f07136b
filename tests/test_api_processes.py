"""Several API processes on one store: `serve --api-workers`, and create quotas they share.

Real `wanserve serve` processes on one SQLite database: the create rate is one limit for
all of them (kept in the database), and `--api-workers 2` runs two API processes on one
port that answer 100 concurrent polls.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from helpers import png_bytes, scene

KEY = {"Authorization": "Bearer proc-key"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _data_url(shift: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(scene(320, 240, shift))).decode()


BODY = {
    "model": "wan2.7-i2v",
    "prompt": "a cat",
    "seconds": "2",
    "size": "320x240",
    "media": [
        {"type": "first_frame", "url": _data_url(0)},
        {"type": "last_frame", "url": _data_url(80)},
    ],
}


@contextmanager
def serving(data_dir: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`wanserve serve` on a free port with a create rate of burst 3; its URL and process."""
    port = _free_port()
    env = {
        **os.environ,
        "WANSERVE_API_KEYS": "proc-key",
        "WANSERVE_CREATE_RATE": "0.001",
        "WANSERVE_CREATE_BURST": "3",
        "WANSERVE_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "wanserve.cli", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--workers", "0", *args]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "serve exited before it answered"
            assert time.monotonic() < deadline, "serve did not answer in time"
            time.sleep(0.2)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.mark.slow
def test_two_api_processes_share_one_create_rate(tmp_path: Path):
    with serving(tmp_path) as (first, _), serving(tmp_path) as (second, _):
        statuses = [
            httpx.post(f"{url}/v1/videos", json=BODY, headers=KEY, timeout=60).status_code
            for url in [first, second] * 4
        ]
    # Burst 3 for the key, whichever process answers: per-process buckets would grant 6.
    assert statuses == [200, 200, 200] + [429] * 5


async def _poll(url: str, path: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, headers=KEY, timeout=30, limits=limits) as http:
        return [
            r.status_code for r in await asyncio.gather(*(http.get(path) for _ in range(count)))
        ]


def _api_children(parent: int) -> int:
    """How many of `parent`'s children are spawned Python processes (uvicorn's workers)."""
    count = 0
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{parent}\n" in status and b"spawn_main" in cmdline:
            count += 1
    return count


@pytest.mark.slow
def test_api_workers_serve_one_port_from_two_processes(tmp_path: Path):
    with serving(tmp_path, "--api-workers", "2") as (url, process):
        assert _api_children(process.pid) == 2
        created = httpx.post(f"{url}/v1/videos", json=BODY, headers=KEY, timeout=60)
        assert created.status_code == 200, created.text
        path = f"/v1/videos/{created.json()['id']}"
        assert asyncio.run(_poll(url, path, 100)) == [200] * 100
    assert process.returncode == 0
