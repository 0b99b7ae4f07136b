"""DashScope-compatible `/api/v1` routes: video-synthesis create and the task API.

They let DashScope's own clients (the `dashscope` SDK 1.x `VideoSynthesis` calls and 2.x
`Client.videos`) use wanserve unchanged. A task id is our job id, so a job made here is
the same job on `/v1/videos/{id}`, and the other way round.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.exceptions import HTTPException

from wanserve.api.dashscope_schemas import (
    CreatedOutput,
    CreatedTask,
    DashScopeError,
    SynthesisBody,
    TaskAnswer,
    TaskList,
    TaskOutput,
    TaskStatus,
    TaskSummary,
    TaskUsage,
    synthesis_body_schema,
)
from wanserve.api.fields import IdempotencyKey, ResourceId, Text
from wanserve.api.forms import parse_json_body
from wanserve.api.quota import CreateQuotaCheck
from wanserve.api.services import Owner, Services, Svc, store_read
from wanserve.api.views import base_url, video_url
from wanserve.errors import Conflict, InvalidRequest, NotFound
from wanserve.jobs.lifecycle import cancel_job
from wanserve.jobs.model import Job, JobStatus

ERROR_TEXT = {
    400: "Invalid request (the message names the field)",
    401: "Missing or wrong API key",
    403: "Synchronous call: send X-DashScope-Async: enable",
    404: "No such task for this API key",
    413: "Request body too large",
    429: "Too many create requests or unfinished tasks for this API key",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": DashScopeError, "description": ERROR_TEXT[s]} for s in statuses}


router = APIRouter(prefix="/api/v1", tags=["dashscope"], responses=_errors(400, 401, 404))


DASHSCOPE_STATUS: dict[JobStatus, TaskStatus] = {
    JobStatus.QUEUED: "PENDING",
    JobStatus.IN_PROGRESS: "RUNNING",
    JobStatus.COMPLETED: "SUCCEEDED",
    JobStatus.FAILED: "FAILED",
    JobStatus.CANCELLED: "CANCELED",
    JobStatus.UNKNOWN: "UNKNOWN",
}
JOB_STATUS: dict[str, JobStatus] = {wire: status for status, wire in DASHSCOPE_STATUS.items()}
LIST_TIME_FORMATS = ("%Y%m%d%H%M%S", "%Y-%m-%d %H:%M:%S")
# Keeps the row offset, (page_no - 1) * page_size, far inside a 64-bit SQL integer.
MAX_PAGE_NO = 1_000_000
# DashScope writes and reads task times in Beijing time, whatever the server's zone.
DASHSCOPE_TZ = timezone(timedelta(hours=8))

CREATE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": synthesis_body_schema()}},
    }
}


def dashscope_time(stamp: float | None) -> str | None:
    """DashScope's timestamp format, `2025-06-30 14:37:53.838`, in its time zone."""
    if stamp is None:
        return None
    moment = datetime.fromtimestamp(stamp, DASHSCOPE_TZ)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{moment.microsecond // 1000:03d}"


def _request_id() -> str:
    return str(uuid.uuid4())


def _require_async(
    x_dashscope_async: Annotated[Text | None, Header(alias="X-DashScope-Async")] = None,
) -> None:
    # Video synthesis is asynchronous-only on DashScope, and it refuses plain calls so.
    if (x_dashscope_async or "").strip().lower() != "enable":
        raise HTTPException(403, "current user api does not support synchronous calls")


def _task_or_404(svc: Services, task_id: str, owner: str) -> Job:
    return _found(svc.store.get(task_id, owner), task_id)


def _found(job: Job | None, task_id: str) -> Job:
    if job is None:
        raise NotFound(f"No task found with id '{task_id}'.", param="task_id")
    return job


def task_output(job: Job, root: str, svc: Services) -> TaskOutput:
    """The DashScope `output` of a job."""
    output = TaskOutput(
        task_id=job.id,
        task_status=DASHSCOPE_STATUS[job.status],
        submit_time=dashscope_time(job.created_at),
        scheduled_time=dashscope_time(job.started_at),
        end_time=dashscope_time(job.completed_at),
    )
    if job.status is JobStatus.COMPLETED:
        output.video_url = video_url(job, root, svc)
        output.orig_prompt = job.spec.prompt
        output.actual_prompt = job.metadata.get("actual_prompt") or job.spec.prompt
    elif job.status is JobStatus.FAILED:
        output.code = job.error_code
        output.message = job.error_message
    return output


def task_usage(job: Job) -> TaskUsage | None:
    """Usage of a completed job: its duration and size, as DashScope reports them."""
    if job.status is not JobStatus.COMPLETED:
        return None
    width = job.result.get("width") or job.spec.width
    height = job.result.get("height") or job.spec.height
    # The whole output's length, as DashScope counts it (a continuation's clip included).
    seconds = round(job.result.get("duration") or job.spec.seconds)
    return TaskUsage(
        duration=seconds,
        video_duration=seconds,
        output_video_duration=seconds,
        video_ratio=f"{width}*{height}",
        sr=min(width, height),
    )


def _answer(request: Request, svc: Services, job: Job) -> TaskAnswer:
    root = base_url(request, svc.settings)
    return TaskAnswer(
        request_id=_request_id(), output=task_output(job, root, svc), usage=task_usage(job)
    )


@router.post(
    "/services/aigc/video-generation/video-synthesis",
    response_model=CreatedTask,
    openapi_extra=CREATE_BODY_DOC,
    responses=_errors(403, 413, 429),
    summary="DashScope video synthesis (needs X-DashScope-Async: enable)",
)
@router.post(
    "/services/aigc/image2video/video-synthesis",
    response_model=CreatedTask,
    openapi_extra=CREATE_BODY_DOC,
    responses=_errors(403, 413, 429),
    summary="DashScope key-frame video synthesis (needs X-DashScope-Async: enable)",
)
async def create_task(
    request: Request,
    svc: Svc,
    owner: Owner,
    _async: Annotated[None, Depends(_require_async)],
    _quota: Annotated[None, CreateQuotaCheck],  # after the async check: a refusal costs nothing
    idempotency_key: IdempotencyKey = None,
) -> CreatedTask:
    """Validate, fetch and store the media, and queue the job; answers its task id."""
    body = SynthesisBody.model_validate(parse_json_body(await request.body()))
    job = await svc.intake.submit(
        body.to_create_request(), owner, idempotency_key=idempotency_key, source_api="dashscope"
    )
    svc.metrics.created.labels(job.model, "dashscope").inc()
    output = CreatedOutput(task_id=job.id, task_status=DASHSCOPE_STATUS[job.status])
    return CreatedTask(request_id=_request_id(), output=output)


# `async def` like the OpenAI polls (see `store_read`): DashScope's `wait` polls here.
@router.get("/tasks/{task_id}", response_model=TaskAnswer, response_model_exclude_none=True)
async def fetch_task(task_id: ResourceId, request: Request, svc: Svc, owner: Owner) -> TaskAnswer:
    """The task: status, times, and on success the video URL, prompts and usage."""
    job = _found(await store_read(svc, svc.store.get, task_id, owner), task_id)
    return _answer(request, svc, job)


@router.post("/tasks/{task_id}/cancel", response_model=TaskAnswer, response_model_exclude_none=True)
def cancel_task(task_id: ResourceId, request: Request, svc: Svc, owner: Owner) -> TaskAnswer:
    """Cancel a PENDING or RUNNING task (DashScope allows PENDING only; we allow both)."""
    job = _task_or_404(svc, task_id, owner)
    try:
        job = cancel_job(svc.store, job)
    except Conflict as exc:
        current = svc.store.get(task_id, owner) or job
        raise Conflict(
            f"Task '{task_id}' cannot be canceled: it already finished "
            f"({DASHSCOPE_STATUS[current.status]}). Only PENDING or RUNNING tasks can be.",
            code=exc.code,
        ) from None
    return _answer(request, svc, job)


def _list_time(value: str | None, param: str) -> float | None:
    if value is None or not value.strip():
        return None
    for fmt in LIST_TIME_FORMATS:
        try:
            moment = datetime.strptime(value.strip(), fmt)
            return moment.replace(tzinfo=DASHSCOPE_TZ).timestamp()
        except ValueError:
            continue
    raise InvalidRequest(
        f"{param} must be a time such as 20250630143753 or '2025-06-30 14:37:53'.", param=param
    )


def _list_statuses(value: str | None) -> list[JobStatus] | None:
    if value is None or not value.strip():
        return None
    status = JOB_STATUS.get(value.strip().upper())
    if status is None:
        known = ", ".join(JOB_STATUS)
        raise InvalidRequest(f"status must be one of {known}.", param="status")
    return [status]


@router.get("/tasks", response_model=TaskList, response_model_exclude_none=True)
def list_tasks(
    request: Request,
    svc: Svc,
    owner: Owner,
    page_no: Annotated[int, Query(ge=1, le=MAX_PAGE_NO)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
    status: Text | None = None,
    model_name: Text | None = None,
    start_time: Text | None = None,
    end_time: Text | None = None,
) -> TaskList:
    """The caller's tasks, newest first, filtered by status, model and submit time."""
    filters: dict[str, Any] = {
        "statuses": _list_statuses(status),
        "model": model_name or None,
        "created_from": _list_time(start_time, "start_time"),
        "created_to": _list_time(end_time, "end_time"),
    }
    offset = (page_no - 1) * page_size
    jobs, _ = svc.store.list(owner, limit=page_size, offset=offset, **filters)
    root = base_url(request, svc.settings)
    entries = [
        TaskSummary(
            **task_output(job, root, svc).model_dump(),
            model_name=job.model,
            status=DASHSCOPE_STATUS[job.status],
        )
        for job in jobs
    ]
    total = svc.store.count(owner, **filters)
    return TaskList(
        request_id=_request_id(),
        data=entries,
        tasks=entries,
        total=total,
        total_page=math.ceil(total / page_size),
        page_no=page_no,
        page_size=page_size,
    )
