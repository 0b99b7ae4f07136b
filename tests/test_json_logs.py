"""JSON log lines: they parse, carry the request, job and key owner from context, and keep
secrets out; `X-Request-Id` is echoed or made."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from helpers import seed_body
from wanserve.logs import (
    ContextFilter,
    EscapeControls,
    JsonFormatter,
    RedactSecrets,
    log_context,
)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What wanserve's loggers write through a JSON handler set up as `configure_logging` does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    for kind in (RedactSecrets, EscapeControls, ContextFilter):
        handler.addFilter(kind())
    logger = logging.getLogger("wanserve")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_json_line_has_the_fields_and_no_secret(json_lines):
    logger = logging.getLogger("wanserve.test")
    with log_context(request_id="req-1", job_id="video_1", owner_id="owner-1"):
        logger.warning("called with Authorization: Bearer sk-secret-key\nforged")
        try:
            raise ValueError("boom\nERROR forged")
        except ValueError:
            logger.exception("it failed")
    logger.info("outside")
    first, second, third = parsed(json_lines)
    assert set(first) == {
        "time", "level", "logger", "message", "process", "request_id", "job_id", "owner_id"
    }
    assert (first["level"], first["logger"]) == ("WARNING", "wanserve.test")
    context = (first["request_id"], first["job_id"], first["owner_id"])
    assert context == ("req-1", "video_1", "owner-1")
    assert "sk-secret-key" not in json_lines.getvalue() and "[redacted]" in str(first["message"])
    assert "ValueError: boom" in str(second["traceback"])
    assert "job_id" not in third  # the context ended with the block
    assert len(json_lines.getvalue().splitlines()) == 3


def test_every_line_about_a_job_carries_its_id_in_api_and_worker(
    client, worker, media_server, json_lines
):
    created = client.post(
        "/v1/videos", json=seed_body(media_server), headers={"X-Request-Id": "test-req-1"}
    )
    assert created.headers["x-request-id"] == "test-req-1"
    video_id = created.json()["id"]
    for _ in range(600):
        if client.get(f"/v1/videos/{video_id}").json()["status"] == "completed":
            break
        worker.stopping.wait(0.1)
    lines = parsed(json_lines)
    about = [line for line in lines if video_id in str(line["message"])]
    assert len(about) >= 3  # queued (API), started and completed (worker)
    assert all(line.get("job_id") == video_id for line in about), about
    queued = next(line for line in about if "queued" in str(line["message"]))
    assert queued["request_id"] == "test-req-1" and queued["owner_id"] == "public"
    started = next(line for line in about if "started" in str(line["message"]))
    assert started["owner_id"] == "public" and "request_id" not in started


@pytest.mark.parametrize("given", [None, "has spaces", "x" * 200, "ünïcode".encode()])
def test_a_request_id_is_made_when_none_or_an_unusable_one_is_given(client, given):
    headers = {"X-Request-Id": given} if given is not None else {}
    answer = client.get("/healthz", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
