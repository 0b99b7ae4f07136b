"""What a client can do to an existing job, whichever API family it speaks: cancel, delete."""

from __future__ import annotations

import contextlib

from wanserve.errors import Conflict, NotFound
from wanserve.jobs.model import ErrorCode, Job, JobStatus
from wanserve.jobs.store import JobStore
from wanserve.storage.base import Storage
from wanserve.storage.layout import job_prefix


def _already_finished(job_id: str, status: JobStatus) -> Conflict:
    return Conflict(
        f"Video '{job_id}' already finished ({status.value}).", code="video_already_finished"
    )


def cancel_job(store: JobStore, job: Job) -> Job:
    """Cancel an unfinished job; a finished one is a `Conflict` `video_already_finished`.

    The store's state is the cancel: a running worker notices it through its heartbeat.
    """
    if job.status.is_finished:
        raise _already_finished(job.id, job.status)
    try:
        return store.transition(
            job.id,
            JobStatus.CANCELLED,
            error_code=ErrorCode.CANCELLED.value,
            error_message="The job was cancelled.",
            completed_at=store.clock(),
        )
    except Conflict:
        current = store.get(job.id)
        if current is None:
            raise NotFound(f"No video found with id '{job.id}'.", code="video_not_found") from None
        if current.status.is_finished:
            raise _already_finished(job.id, current.status) from None
        raise


def delete_job(store: JobStore, storage: Storage, job: Job) -> None:
    """Cancel the job if unfinished, then remove its files and its record.

    Files go first: on a full disk that frees the space the database needs to record the
    delete. A worker still writing outputs finds the job gone and drops them itself.
    """
    storage.delete_prefix(job_prefix(job.id))
    if not job.status.is_finished:
        # If it finished meanwhile, deleting is still what was asked.
        with contextlib.suppress(Conflict):
            cancel_job(store, job)
    store.delete(job.id)
