"""What a running job's engine sees of the job core: progress, cancel, saved state, leases."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wanserve.errors import JobCancelled, StoreUnavailable
from wanserve.jobs.backoff import Backoff, persist
from wanserve.jobs.model import Job, JobStatus
from wanserve.jobs.store import JobStore

logger = logging.getLogger(__name__)


class WorkerStopping(JobCancelled):
    """The worker process is shutting down; its job goes back to the queue."""


class JobLost(JobCancelled):
    """The job was re-queued after a missed lease and may be running elsewhere now.

    Distinct from a plain `JobCancelled` (the client cancelled or deleted it) so an
    upstream engine does not cancel a provider task that another worker may be resuming.
    """


class JobContext:
    """The `EngineContext` for one attempt at one job."""

    def __init__(
        self, store: JobStore, job: Job, worker_id: str, work_dir: Path, stopping: threading.Event
    ):
        self.store = store
        self.job = job
        self.worker_id = worker_id
        self.work_dir = work_dir
        self._stopping = stopping
        self._lost = threading.Event()
        self._cancelled = threading.Event()
        self._progress = job.progress
        self._progress_retry_at = 0.0
        self._progress_backoff = Backoff(first=0.5, cap=10.0)
        self._state: dict[str, Any] = dict(job.engine_state)

    def report_progress(self, fraction: float) -> None:
        """Store progress as a percentage, capped at 99 until the job is completed.

        Never raises for the store: while it is away, the engine goes on and a later
        report (after a growing pause) writes the progress reached by then.
        """
        percent = min(99, max(0, int(fraction * 100)))
        if percent <= self._progress or time.monotonic() < self._progress_retry_at:
            return
        try:
            self.store.set_progress(self.job.id, percent)
        except StoreUnavailable:
            self._progress_retry_at = time.monotonic() + self._progress_backoff.next()
            logger.warning("job %s: progress not stored (job store unavailable)", self.job.id)
            return
        self._progress_backoff.reset()
        self._progress = percent

    def raise_if_cancelled(self) -> None:
        """Raise when the job was cancelled or deleted, or the worker is stopping."""
        if self._stopping.is_set():
            raise WorkerStopping("worker is stopping")
        if self._cancelled.is_set():
            raise JobCancelled("job was cancelled or deleted")
        if self._lost.is_set():
            raise JobLost("job was taken over after a missed lease")

    @property
    def state(self) -> Mapping[str, Any]:
        """Engine state saved by an earlier attempt."""
        return self._state

    def save_state(self, state: Mapping[str, Any]) -> None:
        """Persist engine state now (before the engine goes on), waiting out a store outage."""
        self._state = dict(state)
        try:
            persist(
                lambda: self.store.save_engine_state(self.job.id, self._state),
                stopping=self._stopping,
                what=f"job {self.job.id}: engine state",
            )
        except StoreUnavailable:
            raise WorkerStopping("worker is stopping") from None

    def keep_alive(self, interval: float, done: threading.Event) -> None:
        """Heart-beat until `done`; notice when the job stops being ours."""
        while not done.wait(interval):
            try:
                if not self.store.heartbeat(self.job.id, self.worker_id):
                    status = self.store.status_of(self.job.id)
                    gone = status is None or status is JobStatus.CANCELLED
                    (self._cancelled if gone else self._lost).set()
                    return
            except StoreUnavailable:
                # Tried again at the next beat; a lease outlasted means the job is lost.
                logger.warning("job %s: heartbeat not stored (job store unavailable)", self.job.id)
            except Exception:
                logger.exception("job %s: heartbeat failed", self.job.id)
