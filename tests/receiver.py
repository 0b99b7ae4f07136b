"""A webhook receiver on 127.0.0.1: records each delivery and answers scripted statuses."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Delivery:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """What the receiver got, and the statuses it answers with (then `default`)."""

    url: str
    statuses: list[int] = field(default_factory=list)
    default: int = 200
    deliveries: list[Delivery] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def answer(self) -> int:
        return self.statuses.pop(0) if self.statuses else self.default

    def record(self, delivery: Delivery) -> None:
        with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()

    def wait_for(self, count: int, timeout: float = 60) -> list[Delivery]:
        """Wait until `count` deliveries arrived; all of them so far."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(f"{len(self.deliveries)} of {count} deliveries arrived")
            return list(self.deliveries)


@contextmanager
def receiver(statuses: list[int] | None = None, port: int = 0) -> Iterator[Receiver]:
    """A receiver on a free (or the given) port; stopped after the block."""
    state: list[Receiver] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = state[0].answer()
            state[0].record(
                Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status)
            )
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.append(
        Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", list(statuses or []))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        server.shutdown()
        server.server_close()
