"""Job queues: the database default, Celery on Redis and RabbitMQ, and the one-id claim."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_job_store import make_job

from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.model import JobStatus
from wanserve.jobs.queue import CeleryQueue, DatabaseQueue, open_queue
from wanserve.jobs.store import JobStore
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings

MODEL = "wan2.7-i2v"
REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
BROKERS = [
    pytest.param(REDIS_URL, id="redis", marks=pytest.mark.services),
    pytest.param(RABBITMQ_URL, id="rabbitmq", marks=pytest.mark.services),
]


class FakeWorker:
    """What `consume` needs of a Worker; records the job ids it was asked to run."""

    def __init__(self, expected: int):
        self.settings = Settings(poll_interval=0.05)
        self.worker_id = "fake"
        self.stopping = threading.Event()
        self.routes = [MODEL]
        self.ran: list[str] = []
        self.maintained = 0
        self._expected = expected

    def maintain(self, *, force: bool = False) -> None:
        self.maintained += 1

    def run_job(self, job_id: str, route: str) -> bool:
        assert route == MODEL
        self.ran.append(job_id)
        if len(self.ran) >= self._expected:
            self.stopping.set()
        return True


class RecordingQueue(DatabaseQueue):
    """The database queue, remembering what it was asked to publish."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    def publish(self, job_id: str, route: str) -> None:
        self.published.append((job_id, route))


class RecordingWorker(Worker):
    """A worker whose `execute` only records the claimed job."""

    executed: list[str]

    def execute(self, job: Any) -> None:
        self.executed.append(job.id)


def recording_worker(
    store: JobStore, queue: Any = None, settings: Settings | None = None, **kwargs: Any
) -> RecordingWorker:
    settings = settings or Settings()
    registry = EngineRegistry(settings)
    worker = RecordingWorker(settings, store, None, registry, worker_id="w1", queue=queue, **kwargs)  # type: ignore[arg-type]
    worker.executed = []
    return worker


@pytest.fixture(params=BROKERS)
def celery_queue(request: pytest.FixtureRequest) -> Iterator[CeleryQueue]:
    """A Celery queue on a fresh queue name, deleted afterwards."""
    queue = CeleryQueue(request.param, queue_name=f"wanserve-test-{uuid.uuid4().hex[:10]}")
    yield queue
    with queue.app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue.queue_for(MODEL))
    queue.close()


# -- the store's one-id claim ------------------------------------------------------------


def test_claim_job_takes_a_queued_job_once(store: JobStore):
    job = store.create(make_job())
    claimed = store.claim_job(job.id, "w1")
    assert claimed is not None and claimed.status is JobStatus.IN_PROGRESS
    assert claimed.attempts == 1 and claimed.started_at is not None
    assert store.claim_job(job.id, "w2") is None
    assert store.get(job.id).attempts == 1


def test_claim_job_refuses_unknown_finished_and_cancelled_jobs(store: JobStore):
    assert store.claim_job("video_missing", "w1") is None
    cancelled = store.create(make_job())
    store.transition(cancelled.id, JobStatus.CANCELLED)
    assert store.claim_job(cancelled.id, "w1") is None
    done = store.create(make_job())
    store.claim_job(done.id, "w1")
    store.transition(done.id, JobStatus.COMPLETED, worker_id="w1")
    assert store.claim_job(done.id, "w1") is None


def test_claim_job_race_has_one_winner(store: JobStore):
    job = store.create(make_job())
    barrier = threading.Barrier(4)
    wins: list[str] = []

    def race(worker_id: str) -> None:
        barrier.wait()
        if store.claim_job(job.id, worker_id) is not None:
            wins.append(worker_id)

    threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert store.get(job.id).attempts == 1


def test_queued_before_lists_old_queued_jobs_oldest_first(store: JobStore):
    now = time.time()
    old, older = make_job(created_at=now - 60), make_job(created_at=now - 120)
    new = make_job(created_at=now)
    for job in (old, older, new):
        store.create(job)
    running = store.create(make_job(created_at=now - 300))
    store.claim_job(running.id, "w1")
    assert store.queued_before(now - 30) == [older.id, old.id]


# -- the worker's side -------------------------------------------------------------------


def test_run_job_runs_a_queued_job_and_drops_a_stale_message(store: JobStore):
    worker = recording_worker(store)
    job = store.create(make_job())
    assert worker.run_job(job.id, MODEL) is True
    assert worker.executed == [job.id]
    assert worker.run_job(job.id, MODEL) is False  # a duplicate message
    assert worker.executed == [job.id] and store.get(job.id).attempts == 1


def test_maintain_publishes_requeued_stale_jobs(store: JobStore, clock):
    queue = RecordingQueue()
    worker = recording_worker(store, queue)
    job = store.create(make_job())
    store.claim_job(job.id, "dead-worker")
    clock.advance(worker.settings.job_lease + 1)
    worker.maintain(force=True)
    assert store.get(job.id).status is JobStatus.QUEUED
    assert queue.published == [(job.id, MODEL)]


# -- the database queue ----------------------------------------------------------------


def test_database_queue_is_the_default_and_does_nothing(store: JobStore):
    queue = open_queue(Settings(broker_url=None))
    assert isinstance(queue, DatabaseQueue)
    queue.publish("video_x", MODEL)
    queue.check()
    assert queue.sweep(store, [MODEL]) == []
    worker = FakeWorker(expected=1)
    worker.run = worker.stopping.set  # type: ignore[attr-defined]
    queue.consume(worker)  # type: ignore[arg-type]
    assert worker.stopping.is_set()


def test_broker_url_selects_celery_without_connecting():
    queue = open_queue(Settings(broker_url="redis://127.0.0.1:1/0"))
    assert isinstance(queue, CeleryQueue) and "app" not in queue.__dict__
    queue.close()


# -- Celery on Redis and RabbitMQ --------------------------------------------------------


@pytest.mark.timeout(60)
def test_published_jobs_are_consumed_once_each(celery_queue: CeleryQueue):
    ids = [f"video_{i}" for i in range(3)]
    for job_id in ids:
        celery_queue.publish(job_id, MODEL)
    worker = FakeWorker(expected=len(ids))
    celery_queue.consume(worker)  # type: ignore[arg-type]
    assert sorted(worker.ran) == ids
    assert worker.maintained >= 1
    assert celery_queue.waiting(MODEL) == 0


@pytest.mark.timeout(60)
def test_consume_stops_when_told_with_nothing_queued(celery_queue: CeleryQueue):
    worker = FakeWorker(expected=1)
    threading.Timer(1.0, worker.stopping.set).start()
    started = time.monotonic()
    celery_queue.consume(worker)  # type: ignore[arg-type]
    assert worker.ran == [] and time.monotonic() - started < 15


@pytest.mark.timeout(60)
def test_sweep_republishes_stranded_jobs_only_when_nothing_waits(
    celery_queue: CeleryQueue, tmp_path: Path
):
    store = JobStore.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    stranded = store.create(make_job(created_at=time.time() - 60))
    store.create(make_job())  # recent: its message may still be on its way
    assert celery_queue.waiting(MODEL) == 0
    assert celery_queue.sweep(store, [MODEL]) == [stranded.id]
    assert celery_queue.waiting(MODEL) == 1
    assert celery_queue.sweep(store, [MODEL]) == []  # a message waits: leave the backlog alone
    store.engine.dispose()


@pytest.mark.services
def test_check_passes_on_redis_and_fails_on_a_closed_port():
    CeleryQueue(REDIS_URL).check()
    with pytest.raises(Exception):  # noqa: B017 - kombu raises its own OperationalError
        CeleryQueue("redis://127.0.0.1:1/0").check()


@pytest.mark.timeout(30)
def test_publish_to_a_dead_broker_logs_and_does_not_raise(caplog: pytest.LogCaptureFixture):
    queue = CeleryQueue("redis://127.0.0.1:1/0")
    queue.publish("video_lost", MODEL)
    assert "video_lost" in caplog.text


def test_the_queue_module_does_not_import_the_worker():
    """The queue needs only the `JobRunner` protocol: no import cycle with the worker."""
    import subprocess
    import sys

    check = "import sys, wanserve.jobs.queue; assert 'wanserve.jobs.worker' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)
