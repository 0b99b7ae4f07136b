"""The prompt rewriter against a tiny chat-completions server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from wanserve.engines.prompt_extend import (
    PromptExtender,
    PromptExtendSettings,
    prompt_extender,
)


class ChatServer(ThreadingHTTPServer):
    """Answers POST /v1/chat/completions the way `mode` says; records what it received."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()  # a "hang" answer waits for this

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.received.append({"path": self.path, "body": body,
                                     "auth": self.headers.get("Authorization")})  # fmt: skip
        if self.server.mode == "hang":
            self.server.release.wait(10)
            return
        if self.server.mode == "error":
            self._send(500, {"error": {"message": "boom"}})
            return
        text = "" if self.server.mode == "empty" else f"EXTENDED: {body['messages'][-1]['content']}"
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}}]})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    thread = threading.Thread(target=chat.serve_forever, daemon=True)
    thread.start()
    yield chat
    chat.release.set()
    chat.shutdown()
    chat.server_close()
    thread.join()


def _extender(server: ChatServer, **fields: Any) -> PromptExtender:
    return PromptExtender(PromptExtendSettings(url=server.url, model="qwen-plus", **fields))


def test_rewrites_with_one_chat_completion(server: ChatServer) -> None:
    extender = _extender(server, api_key="sk-test")
    assert extender.extend("a cat", job_id="video_1") == "EXTENDED: a cat"
    extender.close()
    (call,) = server.received
    assert call["path"] == "/v1/chat/completions"
    assert call["body"]["model"] == "qwen-plus"
    assert [m["role"] for m in call["body"]["messages"]] == ["system", "user"]
    assert call["auth"] == "Bearer sk-test"


@pytest.mark.parametrize("mode", ["error", "empty"])
def test_failure_falls_back_to_the_prompt(server: ChatServer, mode: str,
                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    server.mode = mode
    extender = _extender(server)
    assert extender.extend("a cat", job_id="video_2") == "a cat"
    extender.close()
    assert "video_2" in caplog.text


def test_timeout_falls_back_to_the_prompt(server: ChatServer) -> None:
    server.mode = "hang"
    extender = _extender(server, timeout=0.2)
    assert extender.extend("a cat", job_id="video_3") == "a cat"
    extender.close()


def test_empty_prompt_is_not_sent(server: ChatServer) -> None:
    extender = _extender(server)
    assert extender.extend("  ", job_id="video_4") == "  "
    extender.close()
    assert server.received == []


def test_off_unless_url_and_model_are_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANSERVE_PROMPT_EXTEND_URL", raising=False)
    monkeypatch.setenv("WANSERVE_PROMPT_EXTEND_MODEL", "qwen-plus")
    assert prompt_extender({}) is None
    extender = prompt_extender({"prompt_extend_url": "http://127.0.0.1:9/v1"})
    assert extender is not None and extender.model == "qwen-plus"
    extender.close()
