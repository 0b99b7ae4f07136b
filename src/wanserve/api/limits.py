"""Request body limits, enforced while the body streams in (before it is read whole)."""

from __future__ import annotations

import anyio
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanserve.api.errors import domain_error_response
from wanserve.errors import PayloadTooLarge, RequestTimeout, WanserveError

# Methods whose requests carry no body unless they say so (a length, or chunked).
BODILESS = frozenset({"GET", "HEAD"})


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit of their content type, 408 for
    bodies that take longer than `read_timeout` seconds to arrive.

    A declared Content-Length over the limit is refused before the app runs. A body
    that streams past the limit (chunked, or lying about its length), or trickles in
    too slowly (a slowloris holding a worker), makes `receive` raise; whatever the app
    then answers (a parser may wrap the error in a 400, or let it escape), the client
    gets the 413 or the 408.
    """

    def __init__(
        self, app: ASGIApp, *, json_limit: int, multipart_limit: int, read_timeout: float
    ):
        self.app = app
        self.json_limit = json_limit
        self.multipart_limit = multipart_limit
        self.read_timeout = read_timeout

    def _limit_for(self, headers: dict[bytes, bytes]) -> int:
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        return self.multipart_limit if content_type.startswith("multipart/") else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if (
            scope["method"] in BODILESS
            and declared in (None, b"0")
            and b"transfer-encoding" not in headers
        ):
            # No body (HTTP/1.1 has one only with a length or chunked): nothing to count
            # or time, so a poll skips the guard around every receive and send.
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(headers)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, PayloadTooLarge(_message(limit)))
            return
        guard = _StreamGuard(receive, send, limit, anyio.current_time() + self.read_timeout)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if guard.refusal is None or guard.started:
                raise
        if guard.refusal is not None and not guard.started:
            await _refuse(scope, receive, send, guard.refusal)


class _StreamGuard:
    """Counts body bytes and time; once over either, holds back the app's own answer."""

    def __init__(self, receive: Receive, send: Send, limit: int, deadline: float):
        self._receive = receive
        self._send = send
        self.limit = limit
        self.deadline = deadline
        self.received = 0
        self.complete = False  # the last body chunk arrived
        self.refusal: WanserveError | None = None
        self.started = False  # a response went out before the body was refused

    async def receive(self) -> Message:
        if self.complete:
            # Later receives wait for the client to disconnect (a streamed download
            # listens so): that may take as long as the download, and is not bounded.
            return await self._receive()
        try:
            with anyio.fail_after(max(self.deadline - anyio.current_time(), 0)):
                message = await self._receive()
        except TimeoutError:
            self.refusal = RequestTimeout("The request body did not arrive in time.")
            raise self.refusal from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.limit:
                self.refusal = PayloadTooLarge(_message(self.limit))
                raise self.refusal
        return message

    async def send(self, message: Message) -> None:
        if self.refusal is not None and not self.started:
            return  # replaced by the refusal once the app is done
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: WanserveError) -> None:
    response = domain_error_response(Request(scope, receive), refusal)
    # The rest of the body is not read: the connection cannot carry another request.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


def _message(limit: int) -> str:
    mib = 1024 * 1024
    size = f"{limit // mib} MB" if limit >= mib else f"{limit} bytes"
    return f"The request body is larger than the limit of {size}."
