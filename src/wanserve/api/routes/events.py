"""`GET /v1/videos/{id}/events`: a job's status and progress as Server-Sent Events.

Each event is the video object (the same JSON `GET /v1/videos/{id}` answers) with the
job's change counter as its `id:`; a reconnect with `Last-Event-ID` gets the next change
(intermediate progress already passed is not replayed: each event is the whole state).
The stream ends after the terminal event, when the job is deleted, and on shutdown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse

from wanserve.api.fields import ResourceId, Text
from wanserve.api.schemas import error_responses
from wanserve.api.services import Owner, Services, Svc, store_read
from wanserve.api.views import base_url, video_object
from wanserve.errors import NotFound, RateLimited, StoreUnavailable

router = APIRouter(prefix="/v1", tags=["videos"], responses=error_responses(400, 401, 404, 429))


class StreamSlots:
    """Open event streams per key in this process, capped (`MAX_STREAMS_PER_KEY`)."""

    def __init__(self, per_key: int):
        self.per_key = per_key
        self._open: Counter[str] = Counter()

    def check(self, owner: str) -> None:
        """`RateLimited` (429) when all of `owner`'s slots are taken."""
        if self._open[owner] >= self.per_key:
            raise RateLimited(
                f"This API key already has {self.per_key} open event streams; "
                "close one or poll GET /v1/videos/{id}.",
                retry_after=5,
                code="too_many_streams",
            )

    @contextmanager
    def take(self, owner: str) -> Iterator[None]:
        """Hold one of `owner`'s slots while a stream runs."""
        self._open[owner] += 1
        try:
            yield
        finally:
            self._open[owner] -= 1
            if not self._open[owner]:
                del self._open[owner]


def _resume_from(header: str | None) -> int:
    """The version a client saw last (`Last-Event-ID`); -1 (everything) when unreadable."""
    value = (header or "").strip()
    return int(value) if value.isdigit() and len(value) < 19 else -1


@router.get(
    "/videos/{video_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Video objects"}},
)
async def video_events(
    video_id: ResourceId,
    request: Request,
    svc: Svc,
    owner: Owner,
    last_event_id: Annotated[Text | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    """Status and progress changes of a video, live, until it finishes."""
    job = await store_read(svc, svc.store.get, video_id, owner)
    if job is None:
        raise NotFound(
            f"No video found with id '{video_id}'.", code="video_not_found", param="video_id"
        )
    slots: StreamSlots = request.app.state.stream_slots
    # Checked here, so a refusal is a 429; taken once the stream runs, so a stream that
    # never started holds nothing.
    slots.check(owner)
    root = base_url(request, svc.settings)

    async def events() -> AsyncIterator[str]:
        try:
            with slots.take(owner):
                async for chunk in _changes(svc, video_id, owner, root, last_event_id):
                    yield chunk
        except StoreUnavailable:
            return  # the client resumes with Last-Event-ID

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _changes(
    svc: Services, video_id: str, owner: str, root: str, last_event_id: str | None
) -> AsyncIterator[str]:
    """The stream's text: an event per change past `Last-Event-ID`, heartbeats between."""
    async with svc.feed.watch(video_id, _resume_from(last_event_id)) as watcher:
        while True:
            current = await store_read(svc, svc.store.get, video_id, owner)
            if current is None:
                return  # deleted
            if current.version > watcher.known:
                watcher.known = current.version
                body = video_object(current, root, svc).model_dump_json()
                yield f"id: {current.version}\ndata: {body}\n\n"
            if current.status.is_finished:
                return
            changed = await watcher.wait(svc.settings.stream_heartbeat)
            if watcher.closing.is_set():
                return
            if not changed:
                yield ": keep-alive\n\n"
