"""Request latency into the metrics histogram, as plain ASGI middleware."""

from __future__ import annotations

import time

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestTimer:
    """ASGI middleware: `wanserve_http_request_seconds{method,route,status}`.

    Timed until the response starts (its status and headers), so a long download or an
    event stream counts as the time to answer, not the time to send. Plain ASGI rather than
    `BaseHTTPMiddleware`: that one runs every request in a task of its own with a memory
    stream between app and server, the largest cost of a poll after the database.
    """

    def __init__(self, app: ASGIApp, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._observe(scope, message["status"], started)
            await send(message)

        await self.app(scope, receive, timed_send)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        # The route template, not the path: ids would make one series per job.
        template = getattr(scope.get("route"), "path", "unmatched")
        self.histogram.labels(scope["method"], template, str(status)).observe(
            time.perf_counter() - started
        )
