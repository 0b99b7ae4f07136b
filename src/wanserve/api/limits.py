"""Request body limits, enforced while the body streams in (before it is read whole)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanserve.errors import PayloadTooLarge


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit of their content type."""

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
            await self._refuse(scope, receive, send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(_message(limit))
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        from starlette.requests import Request

        from wanserve.api.errors import error_response

        response = error_response(
            Request(scope, receive), 413, _message(limit), code="payload_too_large"
        )
        await response(scope, receive, send)


def _message(limit: int) -> str:
    return f"The request body is larger than the limit of {limit // (1024 * 1024)} MB."
