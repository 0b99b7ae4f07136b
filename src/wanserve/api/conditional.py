"""Conditional GETs: `ETag` on JSON answers that polls repeat, `If-None-Match` -> 304.

A poller that sends back the `ETag` it last saw gets `304 Not Modified` and no body until
the video changes. The tag is a hash of the answer's bytes, so it is right in every API
process and for every field (status, progress, a swept file, a new signed URL) without
the store keeping anything for it.
"""

from __future__ import annotations

import hashlib

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What a 304 keeps of the 200 it stands for (RFC 9110 section 15.4.5; not the length),
# and the poll interval hint: a poller told "not modified" still learns when to ask again.
KEPT_IN_304 = frozenset(
    {b"etag", b"cache-control", b"vary", b"expires", b"date", b"openai-poll-after-ms"}
)


def body_etag(body: bytes) -> str:
    """A strong entity tag for these exact bytes."""
    return f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'


def none_match(request_headers: Headers, etag: str | None) -> bool:
    """Whether `If-None-Match` names `etag` (weak comparison, as GET and HEAD use)."""
    condition = request_headers.get("if-none-match")
    if condition is None or etag is None:
        return False
    if condition.strip() == "*":
        return True
    wanted = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == wanted for tag in condition.split(","))


class ConditionalGet:
    """ASGI middleware: an `ETag` on the 200s of GET and HEAD on `routes` (route templates),
    and a 304 for a request whose `If-None-Match` already holds it.

    Only whole answers (one body message) are tagged; a streamed one passes as it is.
    """

    def __init__(self, app: ASGIApp, routes: frozenset[str]):
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        held: Message | None = None

        async def tagging_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None)
                if message["status"] == 200 and route in self.routes:
                    held = message  # sent with the body, once its tag is known
                    return
            elif held is not None:
                start, held = held, None
                if message.get("more_body", False):
                    await send(start)
                else:
                    start, message = _tagged(scope, start, message.get("body", b""))
                    await send(start)
            await send(message)

        await self.app(scope, receive, tagging_send)


def _tagged(scope: Scope, start: Message, body: bytes) -> tuple[Message, Message]:
    etag = body_etag(body)
    headers = [*start.get("headers", []), (b"etag", etag.encode())]
    if none_match(Headers(scope=scope), etag):
        kept = [(name, value) for name, value in headers if name.lower() in KEPT_IN_304]
        return {**start, "status": 304, "headers": kept}, {
            "type": "http.response.body",
            "body": b"",
        }
    return {**start, "headers": headers}, {"type": "http.response.body", "body": body}
