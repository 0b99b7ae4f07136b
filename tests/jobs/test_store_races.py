"""The store under real concurrency and faults, on SQLite and PostgreSQL.

Creates with one idempotency key, the unfinished-job cap, migrations started together,
and the line between a database outage (`StoreUnavailable`) and every other error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from test_job_store import make_job

from helpers import race
from pgtools import fresh_database
from wanserve.errors import Conflict, StoreUnavailable, TooManyUnfinished
from wanserve.jobs.db import make_engine, migrate
from wanserve.jobs.model import JobStatus
from wanserve.jobs.store import JobStore

THREADS = 24
ROUNDS = 4


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_concurrent_creates_with_one_key_make_one_job(store: JobStore, round_: int):
    key = f"key-{round_}"
    results = race(THREADS, lambda _: store.create(make_job("a"), idempotency=(key, "h")))
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    assert len({job.id for job in results}) == 1
    assert store.count("a") == 1
    assert store.find_idempotent("a", key, "h").id == results[0].id


def test_concurrent_creates_with_one_key_and_other_bodies_are_refused(store: JobStore):
    results = race(THREADS, lambda i: store.create(make_job("a"), idempotency=("k", f"h{i % 2}")))
    made = {r.id for r in results if not isinstance(r, Exception)}
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(made) == 1 and store.count("a") == 1
    assert refused and {getattr(r, "code", r) for r in refused} == {"idempotency_key_reused"}


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_the_unfinished_cap_holds_under_concurrent_creates(store: JobStore, round_: int):
    owner = f"owner-{round_}"
    results = race(THREADS, lambda _: store.create(make_job(owner), max_unfinished=3))
    made = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(made) == 3
    assert all(isinstance(r, TooManyUnfinished) for r in refused)
    assert store.count_unfinished(owner) == 3
    # A finished job frees its place; other owners have their own.
    store.transition(made[0].id, JobStatus.CANCELLED)
    store.create(make_job(owner), max_unfinished=3)
    with pytest.raises(TooManyUnfinished):
        store.create(make_job(owner), max_unfinished=3)
    store.create(make_job(f"other-{round_}"), max_unfinished=3)


def test_a_completion_retried_after_a_lost_answer_counts_as_made(store: JobStore):
    job = store.create(make_job())
    store.claim_job(job.id, "w1")
    store.transition(job.id, JobStatus.COMPLETED, expect=JobStatus.IN_PROGRESS, worker_id="w1")
    again = store.transition(
        job.id, JobStatus.COMPLETED, expect=JobStatus.IN_PROGRESS, worker_id="w1"
    )
    assert again.status is JobStatus.COMPLETED
    with pytest.raises(Conflict):
        store.transition(job.id, JobStatus.FAILED, expect=JobStatus.IN_PROGRESS, worker_id="w1")


def test_a_release_for_want_of_room_counts_the_attempt(store: JobStore):
    job = store.create(make_job())
    store.claim_job(job.id, "w1")
    assert store.release(job.id, "w1", count_attempt=True)
    assert store.get(job.id).attempts == 1
    store.claim_job(job.id, "w1")
    assert store.release(job.id, "w1")  # a stopping worker's release does not count
    assert store.get(job.id).attempts == 1


def test_a_refused_connection_is_store_unavailable_everywhere():
    store = JobStore(make_engine("postgresql://postgres@127.0.0.1:1/none"))
    calls: list[Callable[[], Any]] = [
        store.ping,
        lambda: store.get("video_x"),
        lambda: store.list("a"),
        lambda: store.create(make_job()),
        lambda: store.claim("w", ["wan2.7-i2v"]),
        lambda: store.heartbeat("video_x", "w"),
        lambda: store.requeue_stale(lease=1, max_attempts=1),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as outage:
            call()
        assert outage.value.code == "service_unavailable" and outage.value.retry_after > 0
    store.engine.dispose()


def test_other_database_errors_are_not_an_outage(store: JobStore):
    job = store.create(make_job())
    with pytest.raises(IntegrityError):
        store.create(job)


# -- migrations started together ---------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (a new SQLite file, or a new PostgreSQL database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    with fresh_database() as url:
        yield url


@pytest.mark.timeout(60)  # before the migration lock, threads racing here could hang
@pytest.mark.parametrize("round_", range(3))
def test_migrations_started_together_all_succeed(empty_database: str, round_: int):
    engines = [make_engine(empty_database) for _ in range(6)]
    results = race(len(engines), lambda i: migrate(engines[i]))
    assert [r for r in results if isinstance(r, Exception)] == []
    with engines[0].connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    for engine in engines:
        engine.dispose()
