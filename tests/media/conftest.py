"""Fixtures for the media tests: an origin server, a trap listener, a recording backend."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from media_netfakes import Trap

from netguard import LoopbackOnly

TRICKLE_SECONDS = 5.0


@pytest.fixture
def anyio_backend() -> str:
    """The media code runs under asyncio in the app."""
    return "asyncio"


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    """Routes: /ok, /echo, /big, /stream-big, /trickle, /status/N, /redirect/N, /to?url=."""

    server: _OriginServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, dict(self.headers.items())))
        path = urlsplit(self.path).path
        route = path.split("/")[1]
        handler = getattr(self, f"_route_{route.replace('-', '_')}", self._route_missing)
        handler(path)

    def _send(
        self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _route_ok(self, path: str) -> None:
        self._send(200, b"hello media")

    def _route_echo(self, path: str) -> None:
        text = f"{self.headers['Host']}|{self.headers.get('Authorization', '')}"
        self._send(200, text.encode())

    def _route_big(self, path: str) -> None:
        self._send(200, b"x" * 1000)

    def _route_stream_big(self, path: str) -> None:
        # HTTP/1.0-style body: no Content-Length, ends when the connection closes.
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(10):
            self.wfile.write(b"y" * 100)
        self.close_connection = True

    def _route_trickle(self, path: str) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        deadline = time.monotonic() + TRICKLE_SECONDS
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            return  # the client gave up, as it should

    def _route_status(self, path: str) -> None:
        self._send(int(path.split("/")[2]), b"nope")

    def _route_redirect(self, path: str) -> None:
        remaining = int(path.split("/")[2])
        target = "/ok" if remaining == 0 else f"/redirect/{remaining - 1}"
        self._send(302, headers=[("Location", target)])

    def _route_to(self, path: str) -> None:
        target = parse_qs(urlsplit(self.path).query)["url"][0]
        self._send(307, headers=[("Location", target)])

    def _route_missing(self, path: str) -> None:
        self._send(404)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[tuple[str, dict[str, str]]]


@pytest.fixture(scope="module")
def origin() -> Iterator[_OriginServer]:
    """An HTTP server on 127.0.0.1 with the routes of `_OriginHandler`."""
    server = _OriginServer(("127.0.0.1", 0), _OriginHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def origin_port(origin: _OriginServer) -> int:
    """The origin's port, its request log cleared for this test."""
    origin.seen.clear()
    return int(origin.server_address[1])


@pytest.fixture
def trap() -> Iterator[Trap]:
    """A listener on 127.0.0.1 that records whether anything connected."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    yield Trap(sock)
    sock.close()


@pytest.fixture
def backend() -> LoopbackOnly:
    """A fresh recording network backend."""
    return LoopbackOnly()


@pytest.fixture
def no_leak(trap: Trap, backend: LoopbackOnly) -> Iterator[None]:
    """Fails the test if anything connected to the trap or any address was dialled."""
    yield
    assert not trap.connected()
    assert backend.addresses == []
