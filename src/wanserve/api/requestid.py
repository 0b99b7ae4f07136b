"""`X-Request-Id` and the log context of each request, as plain ASGI middleware."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanserve.logs import log_context

HEADER = b"x-request-id"
# A client's id is kept when it is short and plain (it goes into log lines and headers).
_ACCEPTABLE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
# A job named in the path: every line the request logs carries it.
_JOB_IN_PATH = re.compile(r"/(?:videos|tasks)/(video_[0-9a-f]{32})(?:/|$)")


class RequestContext:
    """Echoes the client's `X-Request-Id` (or makes one) and sets the log context for the
    request: its id and, when the path names one, the job. The key check adds the owner."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == HEADER), b"")
        request_id = given if _ACCEPTABLE.match(given) else uuid.uuid4().hex.encode()
        job = _JOB_IN_PATH.search(scope.get("path", ""))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id)]}
            await send(message)

        with log_context(
            request_id=request_id.decode("ascii"),
            job_id=job.group(1) if job else None,
            owner_id=None,  # the key check sets it; reset when the request ends
        ):
            await self.app(scope, receive, send_with_id)
