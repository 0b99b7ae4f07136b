"""OpenAI-compatible `/v1/videos` routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import RedirectResponse

from wanserve.api.conditional import none_match
from wanserve.api.fields import IdempotencyKey, ResourceId, Text
from wanserve.api.forms import (
    EXTEND_FILE_PARTS,
    FILE_PARTS,
    create_request_from,
    extend_request_from,
    parse_json_body,
    read_form,
)
from wanserve.api.quota import CreateQuotaCheck
from wanserve.api.ranges import ranged_file, requested_ranges
from wanserve.api.schemas import (
    CreateVideoBody,
    ExtendVideoBody,
    RemixBody,
    VideoDeleted,
    VideoList,
    VideoObject,
    error_responses,
)
from wanserve.api.services import Owner, Services, Svc, caller, store_read
from wanserve.api.views import base_url, video_object
from wanserve.errors import InvalidRequest, NotFound
from wanserve.jobs.intake import MediaSource
from wanserve.jobs.lifecycle import cancel_job, delete_job
from wanserve.jobs.model import Job, JobStatus
from wanserve.storage.layout import OUTPUT_FILES, output_key

# A create reads a body and counts against the key's quota.
CREATE_ERRORS = error_responses(413, 429)

router = APIRouter(prefix="/v1", tags=["videos"], responses=error_responses(400, 401, 404))

CREATE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CreateVideoBody"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "The openai SDK's form: scalar fields as strings, "
                    "media as repeated media[][type] / media[][url], or file parts "
                    "input_reference / first_frame / last_frame / driving_audio.",
                    "properties": {
                        "model": {"type": "string"},
                        "prompt": {"type": "string"},
                        "size": {"type": "string"},
                        "seconds": {"type": "string"},
                        "input_reference": {"type": "string", "format": "binary"},
                        "first_frame": {"type": "string", "format": "binary"},
                        "last_frame": {"type": "string", "format": "binary"},
                        "driving_audio": {"type": "string", "format": "binary"},
                        "first_clip": {"type": "string", "format": "binary"},
                    },
                    "required": ["model"],
                }
            },
        },
    }
}


EXTEND_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ExtendVideoBody"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "description": "What the openai SDK's videos.extend sends: the clip to "
                    "continue as the file part `video` (MP4/MOV/WebM, 2..10 s), or "
                    "`video[id]` naming a completed video.",
                    "properties": {
                        "video": {"type": "string", "format": "binary"},
                        "video[id]": {"type": "string"},
                        "prompt": {"type": "string"},
                        "seconds": {"type": "string"},
                        "model": {"type": "string"},
                        "size": {"type": "string"},
                    },
                }
            },
        },
    }
}


def _found(job: Job | None, video_id: str) -> Job:
    if job is None:
        raise NotFound(
            f"No video found with id '{video_id}'.", code="video_not_found", param="video_id"
        )
    return job


def _job_or_404(svc: Services, video_id: str, owner: str | None) -> Job:
    return _found(svc.store.get(video_id, owner), video_id)


def _answer(request: Request, response: Response, svc: Services, job: Job) -> VideoObject:
    if not job.status.is_finished:
        response.headers["openai-poll-after-ms"] = str(svc.settings.poll_after_ms)
    return video_object(job, base_url(request, svc.settings), svc)


@router.post(
    "/videos",
    response_model=VideoObject,
    openapi_extra=CREATE_BODY_DOC,
    responses=CREATE_ERRORS,
    dependencies=[CreateQuotaCheck],
    summary="Create a video from a first frame, a last frame and an optional driving audio",
)
async def create_video(
    request: Request,
    response: Response,
    svc: Svc,
    owner: Owner,
    idempotency_key: IdempotencyKey = None,
) -> VideoObject:
    """Validate, fetch and store the media, and queue the job."""
    body, uploads = await _read_body(request, svc, FILE_PARTS)
    create = create_request_from(body, uploads)
    job = await svc.intake.submit(create, owner, idempotency_key=idempotency_key)
    svc.metrics.created.labels(job.model, "openai").inc()
    return _answer(request, response, svc, job)


async def _read_body(
    request: Request, svc: Services, parts: dict[str, str]
) -> tuple[dict[str, Any], list[MediaSource]]:
    """A JSON or form body, and the media of the file `parts` it uploads."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = b"" if content_type == "multipart/form-data" else await request.body()
    if content_type in ("application/json", "") or (
        # `curl -d '{...}'` without a Content-Type header sends JSON labelled as a form.
        content_type == "application/x-www-form-urlencoded" and raw.lstrip()[:1] == b"{"
    ):
        return parse_json_body(raw), []
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await read_form(request, svc.settings.max_multipart_body, parts)
    raise InvalidRequest(
        f"Unsupported Content-Type '{content_type}': send application/json or multipart/form-data.",
        code="unsupported_content_type",
    )


@router.post(
    "/videos/extensions",
    response_model=VideoObject,
    openapi_extra=EXTEND_BODY_DOC,
    responses=CREATE_ERRORS,
    dependencies=[CreateQuotaCheck],
    summary="Continue a completed video (by id) or an uploaded clip by `seconds`",
)
async def extend_video(
    request: Request,
    response: Response,
    svc: Svc,
    owner: Owner,
    idempotency_key: IdempotencyKey = None,
) -> VideoObject:
    """The openai SDK's `videos.extend`: a new job whose output is the source, then more."""
    body, uploads = await _read_body(request, svc, EXTEND_FILE_PARTS)
    extend = ExtendVideoBody.model_validate(body)
    source, clip = None, None
    if not uploads:
        if extend.video is None:
            raise InvalidRequest(
                "video is required: upload a clip as the file part `video`, or send "
                '{"video": {"id": "video_..."}} naming a completed video.',
                param="video",
            )
        source = await store_read(svc, svc.store.get, extend.video.id, owner)
        if source is None:
            raise NotFound(
                f"No video found with id '{extend.video.id}'.",
                code="video_not_found",
                param="video",
            )
        if source.status is not JobStatus.COMPLETED or not source.result:
            raise InvalidRequest(
                f"Video '{source.id}' must be completed before it can be extended.",
                code="video_not_ready",
                param="video",
            )
        clip = await to_thread.run_sync(svc.intake.output_video, source)
    create = extend_request_from(extend, uploads, source, clip)
    job = await svc.intake.submit(create, owner, idempotency_key=idempotency_key)
    svc.metrics.created.labels(job.model, "openai").inc()
    return _answer(request, response, svc, job)


# The polling routes are `async def` (see `store_read`): every poll of every client
# lands here, and a thread hop costs more than a SQLite read.
@router.get("/videos/{video_id}", response_model=VideoObject)
async def retrieve_video(
    video_id: ResourceId, request: Request, response: Response, svc: Svc, owner: Owner
) -> VideoObject:
    """The video object."""
    job = _found(await store_read(svc, svc.store.get, video_id, owner), video_id)
    return _answer(request, response, svc, job)


# HEAD answers the headers of a GET (uvicorn sends no body); kept out of the schema.
router.add_api_route(
    "/videos/{video_id}", retrieve_video, methods=["HEAD"], include_in_schema=False
)
# The answers `ConditionalGet` tags with an ETag (a 304 for a matching If-None-Match).
CONDITIONAL_ROUTES = frozenset({router.prefix + "/videos/{video_id}"})


@router.get("/videos", response_model=VideoList)
async def list_videos(
    request: Request,
    svc: Svc,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: ResourceId | None = None,
    order: Literal["asc", "desc"] = "desc",
) -> VideoList:
    """The caller's videos, newest first by default, with cursor pagination."""
    jobs, has_more = await store_read(
        svc, svc.store.list, owner, limit=limit, after=after, order=order
    )
    root = base_url(request, svc.settings)
    data = [video_object(j, root, svc) for j in jobs]
    return VideoList(
        data=data,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
        has_more=has_more,
    )


@router.get(
    "/videos/{video_id}/content",
    response_class=Response,
    responses={
        200: {
            "content": {"video/mp4": {}, "image/webp": {}, "image/jpeg": {}},
            "description": "The video (HTTP Range supported), thumbnail or spritesheet.",
        }
    },
)
def download_content(
    video_id: ResourceId,
    request: Request,
    svc: Svc,
    variant: Literal["video", "thumbnail", "spritesheet"] = "video",
    expires: int | None = None,
    signature: Annotated[Text | None, Query(max_length=128)] = None,
) -> Response:
    """The finished video, its thumbnail or its spritesheet.

    Needs the owner's key, or the signature that `video_url` carries.
    """
    signed = (
        svc.signer is not None
        and expires is not None
        and signature is not None
        and svc.signer.verify(request.url.path, expires, signature)
    )
    job = _job_or_404(svc, video_id, None if signed else caller(request))
    if job.status is not JobStatus.COMPLETED:
        raise InvalidRequest(
            f"Video '{video_id}' is not ready: its status is {job.status.value}.",
            code="video_not_ready",
        )
    if not job.result:
        raise NotFound(f"The files of video '{video_id}' have expired.", code="video_expired")
    key = output_key(job.id, variant)
    filename, media_type = OUTPUT_FILES[variant].name, OUTPUT_FILES[variant].content_type
    gone = NotFound(f"The files of video '{video_id}' are gone.", code="video_expired")
    path = svc.storage.local_path(key)
    if path is not None:
        try:
            answer = ranged_file(
                request.headers, path, media_type=media_type, filename=f"{video_id}-{filename}"
            )
        except FileNotFoundError:
            raise gone from None
        etag = answer.headers.get("etag")
        if none_match(request.headers, etag):
            return Response(status_code=304, headers={"etag": etag or ""})
        return answer
    if "range" in request.headers and "if-range" not in request.headers:
        # The bucket serves the bytes, but an unsatisfiable range is answered here, in our
        # error shape, as for local files; one we would ignore goes on to the bucket, which
        # (S3, moto) ignores it too.
        size = svc.storage.size(key)
        if size is None:
            raise gone
        requested_ranges(request.headers["range"], size)
    presigned = svc.storage.presigned_url(key, 3600)
    if presigned is None:
        raise gone
    return RedirectResponse(presigned, status_code=307)


# Players probe with HEAD before ranged GETs; same handler, kept out of the schema.
router.add_api_route(
    "/videos/{video_id}/content", download_content, methods=["HEAD"], include_in_schema=False
)


@router.post(
    "/videos/{video_id}/remix",
    response_model=VideoObject,
    responses=CREATE_ERRORS,
    dependencies=[CreateQuotaCheck],
)
async def remix_video(
    video_id: ResourceId,
    body: RemixBody,
    request: Request,
    response: Response,
    svc: Svc,
    owner: Owner,
) -> VideoObject:
    """A new job with the source's media, seed and settings and a new prompt."""
    source = _job_or_404(svc, video_id, owner)
    if source.status is not JobStatus.COMPLETED:
        raise InvalidRequest(
            f"Video '{video_id}' must be completed before it can be remixed.",
            code="video_not_ready",
        )
    job = await to_thread.run_sync(svc.intake.remix, source, body.prompt)
    return _answer(request, response, svc, job)


@router.post("/videos/{video_id}/cancel", response_model=VideoObject)
def cancel_video(
    video_id: ResourceId, request: Request, response: Response, svc: Svc, owner: Owner
) -> VideoObject:
    """Cancel a queued or running job: it ends `failed` with code `cancelled`."""
    job = cancel_job(svc.store, _job_or_404(svc, video_id, owner))
    return _answer(request, response, svc, job)


@router.delete("/videos/{video_id}", response_model=VideoDeleted)
def delete_video(video_id: ResourceId, svc: Svc, owner: Owner) -> VideoDeleted:
    """Cancel the job if unfinished, then delete its record and files."""
    job = _job_or_404(svc, video_id, owner)
    delete_job(svc.store, svc.storage, job)
    return VideoDeleted(id=job.id)


__all__ = ["CreateVideoBody", "ExtendVideoBody", "router"]
