"""Shared fixtures: test media, a local media server, settings, an app and a worker."""

from __future__ import annotations

import functools
import http.server
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import LogWatch, png_bytes, scene, wav_bytes
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test media on disk: 16:9, 9:16 and 1:1 frame pairs and a 3 s WAV."""
    folder = tmp_path_factory.mktemp("media")
    for name, (w, h) in {"wide": (640, 360), "tall": (360, 640), "square": (480, 480)}.items():
        (folder / f"{name}-first.png").write_bytes(png_bytes(scene(w, h, 0)))
        (folder / f"{name}-last.png").write_bytes(png_bytes(scene(w, h, w // 3)))
    (folder / "first.jpg").write_bytes(png_bytes(scene(640, 360, 0), "JPEG"))
    (folder / "audio.wav").write_bytes(wav_bytes(3.0))
    (folder / "long.wav").write_bytes(wav_bytes(8.0))
    (folder / "notes.txt").write_text("not an image")
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def media_server(media_dir: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `media_dir`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh data dir, allowed to fetch from the local media server."""
    return Settings(
        data_dir=tmp_path / "data",
        media_allowed_hosts=["127.0.0.1"],
        poll_interval=0.05,
        encoder_preset="ultrafast",
        workers=0,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A TestClient on an app without worker processes."""
    app = create_app(settings, fetcher=loopback_fetcher(settings), workers=0)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def worker(settings: Settings) -> Iterator[Worker]:
    """A worker running in a thread of the test process (stopped after the test)."""
    runner = build_worker(settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield runner
    runner.stopping.set()
    thread.join(timeout=30)
    runner.registry.close()


@pytest.fixture
def watch_logs() -> Iterator[Callable[[str], LogWatch]]:
    """Start counting wanserve's log records that match a pattern (an event to wait on)."""
    watches: list[LogWatch] = []
    logger = logging.getLogger("wanserve")
    level = logger.level

    def watch(pattern: str) -> LogWatch:
        watches.append(LogWatch(pattern))
        logger.addHandler(watches[-1])
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))  # job events are INFO
        return watches[-1]

    yield watch
    for handler in watches:
        logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def outages(watch_logs: Callable[[str], LogWatch]) -> LogWatch:
    """The "job store unavailable" warnings logged during the test."""
    return watch_logs("job store unavailable")
