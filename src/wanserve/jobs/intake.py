"""Turning a create request into a stored, queued job: media fetched, checked and kept.

Everything a job needs is in our storage before the client gets its id, so a job never
depends on a URL that may expire, and a bad input is refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from anyio import to_thread

from wanserve.engines.registry import EngineRegistry
from wanserve.errors import (
    InvalidRequest,
    MediaError,
    NotFound,
    StorageUnavailable,
    StoreUnavailable,
    Unavailable,
    WanserveError,
)
from wanserve.jobs.model import Job, JobSpec, JobStatus, MediaRef
from wanserve.jobs.queue import DatabaseQueue, JobQueue
from wanserve.jobs.store import JobStore
from wanserve.jobs.webhooks import WebhookConfig
from wanserve.logs import JOB_ID
from wanserve.media.clip import probe_clip
from wanserve.media.fetch import MediaFetcher
from wanserve.media.probe import probe_audio, probe_image
from wanserve.render.geometry import tier_size
from wanserve.settings import Settings
from wanserve.storage.base import Storage
from wanserve.storage.layout import job_prefix, media_key, output_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaSource:
    """One media input as the client gave it: a URL, or uploaded bytes."""

    type: str
    param: str  # where it came from, for error messages: "media[1].url", "first_frame"
    url: str | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class CreateRequest:
    """A syntactically valid create request, from either API family."""

    model: str
    media: list[MediaSource]
    prompt: str = ""
    negative_prompt: str = ""
    size: str = "1080P"
    seconds: int = 5
    prompt_extend: bool = True
    watermark: bool = False
    seed: int | None = None
    webhook_url: str | None = None  # the client's own endpoint for this job's events
    extends: str | None = None  # the completed video whose output is the first_clip
    # DashScope's `duration` is the whole output's: with a first_clip, the clip counts.
    seconds_include_clip: bool = False

    def fingerprint(self) -> str:
        """A digest of the request, to tell an idempotent retry from a different request."""
        body = {k: v for k, v in self.__dict__.items() if k != "media"}
        body["media"] = [
            [m.type, m.url or hashlib.sha256(m.data or b"").hexdigest()] for m in self.media
        ]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def new_job_id() -> str:
    """A fresh public job id."""
    return f"video_{uuid.uuid4().hex}"


MIN_NEW_SECONDS = 2
# The scenarios of wan2.7-i2v: first + last frame, or a clip to continue (optionally
# towards a last frame); a driving audio may join either.
SCENARIOS = (
    frozenset({"first_frame", "last_frame"}),
    frozenset({"first_clip"}),
    frozenset({"first_clip", "last_frame"}),
)


def check_media_set(media: list[MediaSource]) -> None:
    """One of the scenarios' sets of media, each type at most once, audio optional."""
    seen: set[str] = set()
    for item in media:
        if item.type in seen:
            raise InvalidRequest(f"media has more than one {item.type}.", param="media")
        seen.add(item.type)
    if {"first_frame", "first_clip"} <= seen:
        raise InvalidRequest(
            "media may hold a first_frame or a first_clip, not both.", param="media"
        )
    if seen - {"driving_audio"} in SCENARIOS:
        return
    if "first_clip" in seen:
        raise InvalidRequest(
            "media with a first_clip may add only a last_frame and a driving_audio.",
            param="media",
        )
    for required in ("first_frame", "last_frame"):
        if required not in seen:
            raise InvalidRequest(f"media must include a {required}.", param="media")


def continuation_metadata(media: list[MediaRef], extends: str | None = None) -> dict[str, Any]:
    """What a continued video records from the start: its source clip's length and, for an
    extension by id, the video it continues."""
    clip = next((m for m in media if m.type == "first_clip"), None)
    if clip is None or clip.duration is None:
        return {}
    continued: dict[str, Any] = {"source_seconds": clip.duration}
    if extends:
        continued["extended_from"] = extends
    return {"continuation": continued}


def new_seconds(request: CreateRequest, media: list[MediaRef]) -> int:
    """Seconds of video to make: `seconds`, or for a DashScope continuation what its
    whole `duration` leaves after the clip (at least 2)."""
    clip = next((m for m in media if m.type == "first_clip"), None)
    if not request.seconds_include_clip or clip is None or clip.duration is None:
        return request.seconds
    left = round(request.seconds - clip.duration)
    if left < MIN_NEW_SECONDS:
        raise InvalidRequest(
            f"parameters.duration is the whole video's length: {request.seconds} s leaves "
            f"{max(0, left)} s after the {clip.duration:g} s first_clip; at least "
            f"{MIN_NEW_SECONDS} s of new video are needed.",
            param="parameters.duration",
        )
    return left


def output_size(size: str, first_width: int, first_height: int) -> tuple[int, int]:
    """The video's pixel size: a tier at the first frame's aspect, or `WxH` as given."""
    if size.upper() in ("720P", "1080P"):
        return tier_size(first_width, first_height, size)
    width, height = size.lower().split("x")
    return int(width), int(height)


class FetchObserver(Protocol):
    """Told how media fetches went (the API's metrics)."""

    def fetched(self, seconds: float) -> None:
        """One URL fetched in `seconds`."""

    def fetch_failed(self, reason: str) -> None:
        """One URL refused or failed; `reason` is the error code (media_fetch_timeout...)."""


class Intake:
    """Validates, stores and enqueues new jobs."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        storage: Storage,
        registry: EngineRegistry,
        fetcher: MediaFetcher,
        queue: JobQueue | None = None,
        *,
        observer: FetchObserver | None = None,
    ):
        self.settings = settings
        self.observer = observer
        self.store = store
        self.storage = storage
        self.registry = registry
        self.fetcher = fetcher
        self.queue = queue or DatabaseQueue()
        self.webhooks = WebhookConfig(settings)

    async def submit(
        self,
        request: CreateRequest,
        owner: str,
        *,
        idempotency_key: str | None = None,
        source_api: str = "openai",
    ) -> Job:
        """Create (or, for a repeated idempotency key, find) the job for `request`."""
        route = self.registry.route(request.model)
        fingerprint = request.fingerprint()
        if idempotency_key:
            earlier = await to_thread.run_sync(
                self.store.find_idempotent, owner, idempotency_key, fingerprint
            )
            if earlier is not None:
                return earlier
        check_media_set(request.media)
        if request.webhook_url is not None:
            await self._check_webhook(request.webhook_url, owner)
        blobs = await asyncio.gather(*(self._bytes_of(item) for item in request.media))
        job_id = new_job_id()
        JOB_ID.set(job_id)  # the rest of this request's lines are about this job
        refs = await to_thread.run_sync(self._check_and_store, job_id, request.media, blobs)
        # The clip, when there is one, sets the aspect: the output continues it.
        first = next(r for r in refs if r.type in ("first_frame", "first_clip"))
        assert first.width is not None and first.height is not None
        width, height = output_size(request.size, first.width, first.height)
        spec = JobSpec(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            size=request.size,
            width=width,
            height=height,
            seconds=new_seconds(request, refs),
            seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
            prompt_extend=request.prompt_extend,
            watermark=request.watermark,
        )
        job = Job(
            id=job_id,
            owner=owner,
            model=request.model,
            engine=route.engine,
            status=JobStatus.QUEUED,
            spec=spec,
            media=refs,
            created_at=self.store.clock(),
            source_api=source_api,
            webhooks=self.webhooks.targets(owner, request.webhook_url),
            metadata=continuation_metadata(refs, request.extends),
        )
        idempotency = (idempotency_key, fingerprint) if idempotency_key else None
        return await to_thread.run_sync(self._create, job, idempotency)

    def _create(self, job: Job, idempotency: tuple[str, str] | None = None) -> Job:
        """Record the job whose media are stored (admission decided with the insert)."""
        try:
            created = self.store.create(
                job, idempotency=idempotency, max_unfinished=self.settings.max_unfinished_jobs
            )
        except StoreUnavailable:
            self._drop_media_unless_recorded(job.id)
            raise
        except WanserveError:
            self.storage.delete_prefix(job_prefix(job.id))  # refused: nobody will use them
            raise
        if created.id != job.id:
            # A concurrent retry with the same key came first: drop our copy's files.
            self.storage.delete_prefix(job_prefix(job.id))
            return created
        logger.info("job %s: queued (model %s, engine %s)", job.id, job.model, job.engine)
        self.queue.publish(job.id, job.route)
        return created

    def _drop_media_unless_recorded(self, job_id: str) -> None:
        # A create whose answer was lost with its connection may have been committed all
        # the same: the files go only when the store says there is no such job. If it
        # cannot say, the orphan sweep decides later.
        with contextlib.suppress(StoreUnavailable):
            if self.store.get(job_id) is None:
                self.storage.delete_prefix(job_prefix(job_id))

    async def _check_webhook(self, url: str, owner: str) -> None:
        """A client's `webhook_url` must be signable and pass the media SSRF rules."""
        if not self.webhooks.can_sign(owner):
            raise InvalidRequest(
                "webhook_url needs a webhook secret on this server (WANSERVE_WEBHOOK_SECRET).",
                code="webhooks_not_configured",
                param="webhook_url",
            )
        await self.fetcher.check(url, what="the webhook URL", param="webhook_url")

    async def _bytes_of(self, item: MediaSource) -> bytes:
        # Uploads are size-checked with everything else by the probe in `_check_and_store`.
        if item.data is not None:
            return item.data
        assert item.url is not None
        fetched = item.url.strip()[:5].lower() != "data:"
        started = time.monotonic()
        try:
            data = await self.fetcher.fetch(
                item.url, max_bytes=self._limit(item.type), param=item.param
            )
        except MediaError as exc:
            if fetched and self.observer is not None:
                self.observer.fetch_failed(exc.code)
            raise
        if fetched and self.observer is not None:
            self.observer.fetched(time.monotonic() - started)
        return data

    def _limit(self, media_type: str) -> int:
        if media_type == "driving_audio":
            return self.settings.max_audio_bytes
        if media_type == "first_clip":
            return self.settings.max_clip_bytes
        return self.settings.max_image_bytes

    def _check_and_store(
        self, job_id: str, media: list[MediaSource], blobs: list[bytes]
    ) -> list[MediaRef]:
        refs = []
        for item, data in zip(media, blobs, strict=True):
            limit = self._limit(item.type)
            if item.type == "driving_audio":
                audio = probe_audio(data, param=item.param, max_bytes=limit)
                ref = MediaRef(item.type, "", audio.content_type, duration=audio.duration)
            elif item.type == "first_clip":
                clip = probe_clip(data, param=item.param, max_bytes=limit)
                ref = MediaRef(
                    item.type,
                    "",
                    clip.content_type,
                    width=clip.width,
                    height=clip.height,
                    duration=clip.duration,
                )
            else:
                image = probe_image(data, param=item.param, max_bytes=limit)
                ref = MediaRef(
                    item.type, "", image.content_type, width=image.width, height=image.height
                )
            public_url = (
                item.url if item.url and item.url.startswith(("http://", "https://")) else None
            )
            refs.append(
                replace(
                    ref,
                    key=media_key(job_id, item.type, ref.content_type),
                    source_url=public_url,
                )
            )
        with self._storing_media(job_id):
            for ref, data in zip(refs, blobs, strict=True):
                self.storage.put_bytes(ref.key, data, ref.content_type)
        return refs

    @contextmanager
    def _storing_media(self, job_id: str) -> Iterator[None]:
        """Media writes that fail (a full disk) refuse the create and leave no files."""
        try:
            yield
        except StorageUnavailable:
            with contextlib.suppress(StorageUnavailable):  # the orphan sweep if not now
                self.storage.delete_prefix(job_prefix(job_id))
            raise
        except OSError as exc:
            # No id was given out yet: refuse cleanly, and leave no partial job behind.
            self.storage.delete_prefix(job_prefix(job_id))
            logger.error("job %s: media could not be stored: %s", job_id, exc.strerror)
            raise Unavailable(
                "The server could not store the media; try again later.",
                code="storage_full",
                retry_after=30,
                reason="disk full",
            ) from exc

    def remix(self, source: Job, prompt: str) -> Job:
        """A new queued job with the source's media, seed and settings and a new prompt."""
        job_id = new_job_id()
        media = []
        with self._storing_media(job_id):
            for ref in source.media:
                key = media_key(job_id, ref.type, ref.content_type)
                self._copy(ref.key, key, ref.content_type)
                media.append(replace(ref, key=key))
        job = Job(
            id=job_id,
            owner=source.owner,
            model=source.model,
            # Its own model's engine: the source may have run on an overflow model.
            engine=self.registry.route(source.model).engine,
            status=JobStatus.QUEUED,
            spec=replace(source.spec, prompt=prompt),
            media=media,
            created_at=self.store.clock(),
            remixed_from=source.id,
            source_api=source.source_api,
            webhooks=self.webhooks.targets(source.owner),
            metadata=continuation_metadata(media),
        )
        logger.info("job %s: a remix of %s", job.id, source.id)
        return self._create(job)

    def output_video(self, source: Job) -> bytes:
        """The finished video of a completed job (the clip an extension by id continues)."""
        key = output_key(source.id, "video")
        try:
            path = self.storage.local_path(key)
            if path is not None:
                return path.read_bytes()
            with tempfile.TemporaryDirectory() as scratch:
                local = Path(scratch) / "video.mp4"
                self.storage.download_to(key, local)
                return local.read_bytes()
        except FileNotFoundError:
            raise NotFound(
                f"The files of video '{source.id}' have expired.",
                code="video_expired",
                param="video",
            ) from None

    def _copy(self, source_key: str, target_key: str, content_type: str) -> None:
        path = self.storage.local_path(source_key)
        if path is not None:
            self.storage.put_file(target_key, path, content_type)
            return
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(scratch) / "media"
            self.storage.download_to(source_key, local)
            self.storage.put_file(target_key, local, content_type)
