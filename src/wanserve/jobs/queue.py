"""How workers learn of queued jobs: by polling the database, or from a Celery broker.

The database stays the truth about every job; a broker message only says "a job of model
M is waiting", on M's own queue (`wanserve.<model>`), so only workers serving M receive
it. The worker then claims M's next job fairly (see `routing`), which is usually the
announced one; each queued job has one message, so each message starts one job. Delivery
is at least once (a message is acknowledged after its job, and a job is announced again
when its lease runs out or its message may be lost), and the store's compare-and-set claim
lets exactly one worker run a job, so a duplicate or stale message runs nothing twice.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from wanserve.errors import StoreUnavailable
from wanserve.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from wanserve.jobs.store import JobStore

logger = logging.getLogger(__name__)

TASK_NAME = "wanserve.run_job"
DEFAULT_QUEUE = "wanserve"
# A queued job older than this with no message waiting in the broker is announced again.
STRANDED_AFTER = 10.0
PUBLISH_RETRY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class JobRunner(Protocol):
    """What a queue needs of a worker (the worker module imports the queue, not back)."""

    worker_id: str
    settings: Settings
    stopping: threading.Event
    routes: list[str]  # the models this worker serves

    def run(self) -> None:
        """Poll the database for jobs until `stopping` is set."""

    def maintain(self, *, force: bool = False) -> None:
        """Re-queue jobs of dead workers, sweep stranded jobs and expired files."""

    def run_job(self, job_id: str, route: str) -> bool:
        """Claim and run `route`'s next job (announced by `job_id`); False when none waits."""


class JobQueue(Protocol):
    """How a queued job reaches a worker."""

    def publish(self, job_id: str, route: str) -> None:
        """Announce a job queued on `route`; call after its row is committed."""

    def sweep(self, store: JobStore, routes: list[str]) -> list[str]:
        """Announce again jobs of `routes` whose announcement may be lost; returns their ids."""

    def consume(self, worker: JobRunner) -> None:
        """Run jobs with `worker` until `worker.stopping` is set."""

    def check(self) -> None:
        """Raise if the queue cannot be reached (readiness probe)."""

    def close(self) -> None:
        """Release connections."""


class DatabaseQueue:
    """No broker: workers poll the database for the next job of their models."""

    def publish(self, job_id: str, route: str) -> None:
        """Nothing to send: a polling worker finds the committed row."""

    def sweep(self, store: JobStore, routes: list[str]) -> list[str]:
        """Nothing can be lost: the rows are the queue."""
        return []

    def consume(self, worker: JobRunner) -> None:
        """The polling loop, `Worker.run`."""
        worker.run()

    def check(self) -> None:
        """The database probe covers it."""

    def close(self) -> None:
        """Nothing to release."""


class CeleryQueue:
    """Jobs announced as Celery messages, a queue per model; one job at a time per process.

    `queue_name` is the prefix: model M's messages go to `<queue_name>.<M>`.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        queue_name: str = DEFAULT_QUEUE,
        stranded_after: float = STRANDED_AFTER,
    ):
        self.broker_url = broker_url
        self.queue_name = queue_name
        self.stranded_after = stranded_after
        self._worker: JobRunner | None = None

    @cached_property
    def app(self) -> Celery:
        """The Celery app, built on first use so that celery loads only with a broker."""
        from celery import Celery

        app = Celery("wanserve", broker=self.broker_url, set_as_current=False)
        app.conf.update(
            task_default_queue=self.queue_name,
            task_ignore_result=True,
            result_backend=None,
            # One message reserved per process: a busy worker must not sit on jobs that an
            # idle one could run.
            worker_prefetch_multiplier=1,
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )

        # Acknowledged only after the job: a worker that dies mid-job leaves the message
        # to be delivered again (and its lease runs out, so the job is re-announced too).
        @app.task(name=TASK_NAME, shared=False, acks_late=True, reject_on_worker_lost=True)
        def run_job(job_id: str, route: str) -> None:
            if self._worker is None:
                raise RuntimeError("this process does not consume jobs")
            self._worker.run_job(job_id, route)

        return app

    def queue_for(self, route: str) -> str:
        """The broker queue of one model."""
        return f"{self.queue_name}.{route}"

    def publish(self, job_id: str, route: str) -> None:
        """Announce on `route`'s queue; on failure log it and leave the job to a sweep."""
        try:
            self.app.send_task(
                TASK_NAME,
                args=[job_id, route],
                queue=self.queue_for(route),
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
        except Exception:
            # The row is committed and is the truth: failing the caller would only make a
            # client retry into a duplicate job. The sweep announces it once the broker is back.
            logger.exception("job %s: could not publish to the broker", job_id)

    def waiting(self, route: str) -> int:
        """Messages in `route`'s broker queue not yet handed to a worker."""
        with self.app.connection_for_read() as connection:
            channel = connection.default_channel
            try:
                return int(
                    channel.queue_declare(self.queue_for(route), passive=True).message_count
                )
            except connection.channel_errors:
                return 0  # the queue does not exist yet: nothing was ever published

    def sweep(self, store: JobStore, routes: list[str]) -> list[str]:
        """Re-publish jobs queued for over `stranded_after` on a route whose queue is empty.

        Only when nothing is waiting there: then every queued job of it has lost its
        message (or is about to be claimed, and a duplicate is harmless), while a backlog
        is left alone instead of being duplicated on every sweep.
        """
        stranded: list[str] = []
        for route in routes:
            try:
                if self.waiting(route) > 0:
                    continue
            except Exception:
                logger.exception("queue: broker unreachable, sweep skipped")
                return stranded
            lost = store.queued_before(store.clock() - self.stranded_after, [route])
            for job_id in lost:
                logger.warning("job %s: queued without a message; published again", job_id)
                self.publish(job_id, route)
            stranded.extend(lost)
        return stranded

    def consume(self, worker: JobRunner) -> None:
        """Run a Celery worker (one job at a time) for `worker`, maintenance in a thread."""
        from celery.worker import state

        self._worker = worker
        # The pool thread looks tasks up in Celery's default app, and the shutdown flag is
        # module state (clear one left by an earlier run in this process).
        self.app.set_default()
        state.should_stop = None
        controller = self.app.WorkController(
            hostname=f"wanserve-{uuid.uuid4().hex[:8]}@{socket.gethostname()}",
            # A thread, not the main loop: the loop keeps the broker connection's
            # heartbeats going while a long job runs.
            pool_cls="threads",
            concurrency=1,
            queues=[self.queue_for(route) for route in worker.routes],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=self._on_ready,
        )
        maintenance = threading.Thread(
            target=self._maintain, args=(worker, state), name="maintenance", daemon=True
        )
        maintenance.start()
        try:
            controller.start()
        finally:
            worker.stopping.set()
            maintenance.join()
            self._worker = None
        logger.info("worker %s stopped", worker.worker_id)

    def _on_ready(self, consumer: Any) -> None:
        # An idle event loop sleeps until its next timer, up to 10 s: a one-second tick
        # lets it notice a shutdown request soon.
        consumer.timer.call_repeatedly(1.0, _tick)
        worker = self._worker
        queues = ", ".join(self.queue_for(route) for route in worker.routes) if worker else "?"
        logger.info("worker %s consuming queue %s", worker.worker_id if worker else "?", queues)

    @staticmethod
    def _maintain(worker: JobRunner, state: Any) -> None:
        first = True
        while first or not worker.stopping.wait(worker.settings.poll_interval):
            try:
                # The first round is forced: it re-announces what a lost message stranded.
                worker.maintain(force=first)
            except StoreUnavailable:
                logger.warning(
                    "worker %s: job store unavailable, maintenance skipped", worker.worker_id
                )
            except Exception:
                logger.exception("worker %s: maintenance failed", worker.worker_id)
            first = False
        # Ask Celery's loop for a warm shutdown: the running job has seen `stopping` and
        # gone back to the queue (published again), so waiting for it is short.
        state.should_stop = 0

    def check(self) -> None:
        """Connect to the broker once, or raise."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=5)

    def close(self) -> None:
        """Close the app's connection pools (if it was ever built)."""
        if "app" in self.__dict__:
            self.app.close()


def _tick() -> None:
    """Nothing: only wakes the event loop."""


def open_queue(settings: Settings) -> JobQueue:
    """The broker queue when `broker_url` is set, else the database itself."""
    if settings.broker_url:
        return CeleryQueue(settings.broker_url)
    return DatabaseQueue()
