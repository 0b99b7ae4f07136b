"""The chores every worker shares now and then: lost jobs, stranded messages, old files."""

from __future__ import annotations

import logging
from collections.abc import Callable

from wanserve.errors import StoreUnavailable
from wanserve.jobs.queue import JobQueue
from wanserve.jobs.store import JobStore
from wanserve.logs import log_context
from wanserve.settings import Settings
from wanserve.storage.base import Storage
from wanserve.storage.layout import JOBS_ROOT, job_id_of, job_prefix, output_prefix

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 60.0
ORPHAN_SWEEP_INTERVAL = 900.0
# Intake stores media before the job row: files this old with no row never got one (a
# create cut off mid-request, a database that refused the insert).
ORPHAN_AGE = 3600.0


class Maintenance:
    """Runs the chores at their intervals; any worker may, several at once is harmless."""

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        storage: Storage,
        queue: JobQueue,
        routes: list[str],
    ):
        self.settings = settings
        self.store = store
        self.storage = storage
        self.queue = queue
        self.routes = routes  # the models whose broker queues this worker watches
        self._last_run = float("-inf")
        self._last_orphan_sweep = float("-inf")

    def run(self, *, force: bool = False) -> None:
        """Do what is due (everything when `force`); raises only `StoreUnavailable`."""
        now = self.store.clock()
        if not force and now - self._last_run < min(SWEEP_INTERVAL, self.settings.job_lease / 2):
            return
        self._last_run = now
        chores: list[Callable[[float], None]] = [self.requeue_lost, self.sweep_expired]
        if force or now - self._last_orphan_sweep >= ORPHAN_SWEEP_INTERVAL:
            self._last_orphan_sweep = now
            chores.append(self.sweep_orphans)
        for chore in chores:
            try:
                chore(now)
            except StoreUnavailable:
                raise
            except Exception:
                # Storage out of reach, say: the next round tries again.
                logger.exception("maintenance: %s failed", chore.__name__)

    def requeue_lost(self, now: float) -> None:
        """Re-queue jobs of dead workers (failing those out of attempts), re-announce strays."""
        requeued, failed = self.store.requeue_stale(
            lease=self.settings.job_lease, max_attempts=self.settings.max_attempts
        )
        for job_id in requeued:
            with log_context(job_id=job_id):
                logger.warning("job %s: worker lost, re-queued", job_id)
                job = self.store.get(job_id)
                if job is not None:
                    self.queue.publish(job_id, job.route)
        for job_id in failed:
            with log_context(job_id=job_id):
                logger.error("job %s: worker lost too often, failed", job_id)
        self.queue.sweep(self.store, self.routes)

    def sweep_expired(self, now: float) -> None:
        """Delete the outputs of jobs past their expiry (the records stay)."""
        for job in self.store.expired(now):
            self.storage.delete_prefix(output_prefix(job.id))
            self.store.mark_swept(job.id)
            logger.info("job %s: files expired and deleted", job.id)

    def sweep_orphans(self, now: float) -> None:
        """Delete stored files of jobs that have no record, once they are `ORPHAN_AGE` old."""
        newest: dict[str, float] = {}
        for stored in self.storage.objects(JOBS_ROOT):
            job_id = job_id_of(stored.key)
            if job_id is not None:
                newest[job_id] = max(newest.get(job_id, stored.modified), stored.modified)
        old = {job_id for job_id, modified in newest.items() if now - modified > ORPHAN_AGE}
        for job_id in sorted(old - self.store.existing(old)):
            self.storage.delete_prefix(job_prefix(job_id))
            logger.warning("job %s: stored files without a job record deleted", job_id)
