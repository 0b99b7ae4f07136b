"""Building wire objects from job records (the record itself never leaves the server)."""

from __future__ import annotations

from fastapi import Request

from wanserve.api.schemas import VideoError, VideoMetadata, VideoObject, VideoOverflow
from wanserve.api.services import Services
from wanserve.jobs.model import Job, JobStatus
from wanserve.settings import Settings
from wanserve.storage.layout import output_key

WIRE_STATUS = {JobStatus.CANCELLED: "failed"}


def base_url(request: Request, settings: Settings) -> str:
    """Where clients reach us: the configured public URL, else this request's own base."""
    return (settings.public_url or str(request.base_url)).rstrip("/")


def video_url(job: Job, root: str, svc: Services) -> str | None:
    """The absolute URL of a completed job's video: presigned by the object store, or
    our own content URL, signed until the video expires when the server has keys."""
    if job.status is not JobStatus.COMPLETED or not job.result:
        return None
    presigned = svc.storage.presigned_url(output_key(job.id, "video"), int(svc.settings.retention))
    if presigned:
        return presigned
    path = f"/v1/videos/{job.id}/content"
    if svc.signer is None:
        return root + path
    expires = int(job.expires_at or job.completed_at or 0)
    return f"{root}{path}?{svc.signer.query(path, expires)}"


def video_object(job: Job, root: str, svc: Services) -> VideoObject:
    """The OpenAI-compatible video object of a job."""
    error = None
    if job.status is JobStatus.CANCELLED:
        error = VideoError(code="cancelled", message=job.error_message or "The job was cancelled.")
    elif job.error_code:
        error = VideoError(code=job.error_code, message=job.error_message or job.error_code)
    result = job.result
    moved = job.metadata.get("overflow")
    return VideoObject(
        id=job.id,
        task_id=job.id,
        model=job.model,
        status=WIRE_STATUS.get(job.status, job.status.value),  # type: ignore[arg-type]
        progress=job.progress,
        created_at=int(job.created_at),
        completed_at=int(job.completed_at) if job.completed_at else None,
        expires_at=int(job.expires_at) if job.expires_at else None,
        error=error,
        prompt=job.spec.prompt or None,
        seconds=str(job.spec.seconds),
        size=job.spec.size,
        seed=job.spec.seed,
        engine=job.engine,
        remixed_from_video_id=job.remixed_from,
        video_url=video_url(job, root, svc),
        fps=result.get("fps"),
        width=result.get("width"),
        height=result.get("height"),
        overflow=VideoOverflow(
            from_model=moved["from"],
            to_model=moved["to"],
            from_engine=moved["from_engine"],
        )
        if moved
        else None,
        metadata=_continuation(job),
    )


def _continuation(job: Job) -> VideoMetadata | None:
    continued = job.metadata.get("continuation")
    if not continued:
        return None
    return VideoMetadata(
        source_seconds=continued["source_seconds"],
        extended_from_video_id=continued.get("extended_from"),
    )
