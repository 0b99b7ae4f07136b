"""Request body limits, enforced while the body streams in (before it is read whole)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanserve.api.errors import error_response
from wanserve.errors import PayloadTooLarge


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit of their content type.

    A declared Content-Length over the limit is refused before the app runs. A body
    that streams past the limit (chunked, or lying about its length) makes `receive`
    raise `PayloadTooLarge`; whatever the app then answers (a parser may wrap the error
    in a 400, or let it escape), the client gets the 413.
    """

    def __init__(self, app: ASGIApp, *, json_limit: int, multipart_limit: int):
        self.app = app
        self.json_limit = json_limit
        self.multipart_limit = multipart_limit

    def _limit_for(self, scope: Scope) -> int:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").decode("latin-1").lower()
        return self.multipart_limit if content_type.startswith("multipart/") else self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(scope, receive, send, limit)
            return
        guard = _StreamGuard(receive, send, limit)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.over or guard.started:
                raise
        if guard.over and not guard.started:
            await _refuse(scope, receive, send, limit)


class _StreamGuard:
    """Counts body bytes; once over the limit, holds back the app's own answer."""

    def __init__(self, receive: Receive, send: Send, limit: int):
        self._receive = receive
        self._send = send
        self.limit = limit
        self.received = 0
        self.over = False
        self.started = False  # a response went out before the body overflowed

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.over = True
                raise PayloadTooLarge(_message(self.limit))
        return message

    async def send(self, message: Message) -> None:
        if self.over and not self.started:
            return  # replaced by the 413 once the app is done
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    response = error_response(
        Request(scope, receive), 413, _message(limit), code="payload_too_large"
    )
    await response(scope, receive, send)


def _message(limit: int) -> str:
    mib = 1024 * 1024
    size = f"{limit // mib} MB" if limit >= mib else f"{limit} bytes"
    return f"The request body is larger than the limit of {size}."
