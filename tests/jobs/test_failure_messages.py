"""A failed job's `error.message` says what went wrong, never where; the log keeps where.

Before, a corrupt stored input failed the job with the imaging or audio library's own
text, naming the file's path on the worker, and a provider that could not be reached
named the provider's request paths.
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from netguard import loopback_fetcher
from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker
from wanserve.settings import Settings

# A path, an address or port, a temp dir, a traceback: what a client must not be shown.
WHERE = re.compile(r"/|\\|127\.0\.0\.1|localhost|:\d{2,5}\b|wanserve-|Traceback|Errno")


def _run_next_job(settings: Settings) -> None:
    worker = build_worker(settings)
    try:
        assert worker.run_once()
    finally:
        worker.registry.close()


def _media_file(settings: Settings, video_id: str, name: str) -> Path:
    return next((settings.data_dir / "files" / "jobs" / video_id / "media").glob(f"{name}.*"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("first_frame", "the first_frame cannot be decoded as an image"),
        ("driving_audio", "the driving audio cannot be decoded"),
    ],
)
def test_a_corrupt_stored_input_fails_with_what_not_where(
    client, settings, media_server, caplog, name, expected
):
    video_id = client.post("/v1/videos", json=seed_body(media_server, audio=True)).json()["id"]
    stored = _media_file(settings, video_id, name)
    stored.write_bytes(b"\x00garbage, not media at all" * 10)  # bit rot after intake
    with caplog.at_level(logging.WARNING):
        _run_next_job(settings)
    error = client.get(f"/v1/videos/{video_id}").json()["error"]
    assert error["code"] == "engine_error"
    assert error["message"] == expected
    assert not WHERE.search(error["message"]), error["message"]
    # The operator still learns which file and what the library said.
    assert str(stored) in caplog.text


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: connections are refused


@pytest.mark.parametrize(
    ("engine", "base_path"), [("dashscope", "/api/v1"), ("openai-upstream", "/v1")]
)
def test_an_unreachable_provider_fails_without_its_address(
    settings, media_server, caplog, engine, base_path
):
    base_url = f"http://127.0.0.1:{_refused_port()}{base_path}"
    options = {"base_url": base_url, "api_key": "sk-x", "max_retries": 1, "retry_backoff": 0.01}
    settings = settings.model_copy(update={"models": {"up": {"engine": engine, **options}}})
    app = create_app(settings, workers=0, fetcher=loopback_fetcher(settings))
    with TestClient(app) as client:
        body = seed_body(media_server, model="up")
        video_id = client.post("/v1/videos", json=body).json()["id"]
        with caplog.at_level(logging.WARNING):
            _run_next_job(settings)
        error = client.get(f"/v1/videos/{video_id}").json()["error"]
    assert error["code"] == "upstream_error"
    assert error["message"].startswith(f"{engine}: a request failed 2 times (last: ConnectError")
    assert not WHERE.search(error["message"]), error["message"]
    assert f"POST {base_path}/" in caplog.text, "the log names the request that failed"
