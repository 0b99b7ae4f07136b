"""The body guard (api/limits.py) in front of a tiny ASGI app: time limits on the body."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from wanserve.api.limits import BodyLimit


async def _reader(scope: dict, receive: Any, send: Any) -> None:
    """Reads the whole body, then waits for the disconnect, as a streamed download does."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok", "more_body": True})
    assert (await receive())["type"] == "http.disconnect"
    await send({"type": "http.response.body", "body": b""})


def _run(path: str, messages: list[tuple[float, dict]], timeout: float) -> list[dict]:
    """Send `messages` (each after its delay) through the guard; what the app answered."""
    sent: list[dict] = []
    pending = list(messages)

    async def receive() -> dict:
        delay, message = pending.pop(0)
        await anyio.sleep(delay)
        return message

    async def send(message: dict) -> None:
        sent.append(message)

    guard = BodyLimit(_reader, json_limit=1000, multipart_limit=1000, read_timeout=timeout)
    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    anyio.run(guard, scope, receive, send)
    return sent


def _chunk(body: bytes, more: bool = True) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.parametrize(
    ("path", "code"), [("/v1/videos", "request_timeout"), ("/api/v1/tasks", "RequestTimeOut")]
)
def test_a_body_that_trickles_past_the_limit_is_a_408(path, code):
    trickle = [(0.05, _chunk(b"x")) for _ in range(20)] + [(0.0, _chunk(b"", more=False))]
    sent = _run(path, trickle, timeout=0.3)
    start, body = sent[0], json.loads(sent[1]["body"])
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    assert (body["error"]["code"] if path.startswith("/v1") else body["code"]) == code


def test_waiting_for_the_disconnect_after_the_body_is_not_bounded():
    messages = [(0.0, _chunk(b"{}", more=False)), (0.5, {"type": "http.disconnect"})]
    sent = _run("/v1/videos/x/content", messages, timeout=0.1)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"
