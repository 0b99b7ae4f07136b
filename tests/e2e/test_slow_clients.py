"""A real `wanserve serve` against clients that trickle their body one byte at a time.

A slowloris must not hold a request (or a SIGTERM) forever: the body has
`BODY_READ_TIMEOUT` to arrive, else the answer is a 408 in the family's error shape; on
SIGTERM, running requests get `SHUTDOWN_TIMEOUT`, then the worker processes as long.
Before, `serve` was still running 40 s after SIGTERM with such a client connected.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from e2e_helpers import KEY_A, Server

pytestmark = pytest.mark.slow

CREATE_BODY = json.dumps({"model": "wan2.7-i2v", "media": []}).encode()
DASHSCOPE_CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"


def server_log(server: Server) -> str:
    """What the server process wrote (server_factory keeps it beside the data dir)."""
    port = server.url.rsplit(":", 1)[1]
    return (server.data_dir.parent / f"server-{port}.log").read_text()


@dataclass
class Trickle:
    """A client sending a request's body one byte every half second, on its own thread."""

    sock: socket.socket
    sent: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)

    def answer(self, timeout: float) -> bytes:
        """Everything the server sends until it closes the connection."""
        self.sock.settimeout(timeout)
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return data


@contextmanager
def trickling(url: str, path: str, headers: dict[str, str]) -> Iterator[Trickle]:
    """Start a slow POST of `CREATE_BODY` to `path`; stop sending on exit."""
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(CREATE_BODY)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    client = Trickle(sock)

    def send() -> None:
        for byte in CREATE_BODY[:-1]:  # never the last byte: the body stays unfinished
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # the server answered and closed
            client.sent.set()
            if client.stop.wait(0.5):
                return

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield client
    finally:
        client.stop.set()
        sender.join(5)
        sock.close()


def test_a_trickled_body_is_a_408_in_each_familys_shape(server_factory):
    server = server_factory(workers=0, WANSERVE_BODY_READ_TIMEOUT="1")
    auth = {"Authorization": f"Bearer {KEY_A}"}
    started = time.monotonic()
    with trickling(server.url, "/v1/videos", auth) as openai_client:
        answer = openai_client.answer(timeout=15)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert time.monotonic() - started < 10

    headers = {**auth, "X-DashScope-Async": "enable"}
    with trickling(server.url, DASHSCOPE_CREATE, headers) as dashscope_client:
        head, _, body = dashscope_client.answer(timeout=15).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert json.loads(body)["code"] == "RequestTimeOut"

    # A body that arrives in time is read as before.
    fine = httpx.post(f"{server.url}/v1/videos", content=CREATE_BODY, headers=auth)
    assert fine.status_code == 400 and fine.json()["error"]["code"] != "request_timeout"

    # Control characters a client sends are escaped in the server's log.
    forged = "http://127.0.0.1:9/a\x0bERROR forged\x1b[2J\x85b"
    media = [{"type": "first_frame", "url": forged}, {"type": "last_frame", "url": forged}]
    create = {"model": "wan2.7-i2v", "media": media}
    httpx.post(f"{server.url}/v1/videos", json=create, headers=auth)
    text = server_log(server)
    assert "fetching http://127.0.0.1:9/a\\x0bERROR forged\\x1b[2J\\x85b" in text
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), "a raw control character"


def test_sigterm_returns_within_the_bound_while_a_client_trickles(server_factory):
    server = server_factory(
        workers=1, WANSERVE_BODY_READ_TIMEOUT="600", WANSERVE_SHUTDOWN_TIMEOUT="2"
    )
    with trickling(server.url, "/v1/videos", {"Authorization": f"Bearer {KEY_A}"}) as client:
        assert client.sent.wait(10)
        started = time.monotonic()
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("serve was still running 20 s after SIGTERM")
        took = time.monotonic() - started
    # Two seconds for requests, at most two for the worker process, and the exit itself.
    assert took < 8, f"serve took {took:.1f} s to stop"
    assert "timeout graceful shutdown exceeded" in server_log(server)
