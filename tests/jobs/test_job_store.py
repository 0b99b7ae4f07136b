"""The job store on SQLite and PostgreSQL: transitions, claims, leases, progress, expiry."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from wanserve.errors import Conflict, InvalidRequest
from wanserve.jobs.model import (
    TRANSITIONS,
    IllegalTransition,
    Job,
    JobSpec,
    JobStatus,
    MediaRef,
    check_transition,
)
from wanserve.jobs.store import JobStore

ROUTES = ["wan2.7-i2v"]  # what a worker of the default model claims from
SPEC = JobSpec(
    prompt="p", negative_prompt="", size="720P", width=1280, height=720, seconds=2, seed=7
)


def make_job(owner: str = "owner-a", created_at: float | None = None) -> Job:
    return Job(
        id=f"video_{uuid.uuid4().hex}",
        owner=owner,
        model="wan2.7-i2v",
        engine="keyframe",
        status=JobStatus.QUEUED,
        spec=SPEC,
        media=[MediaRef("first_frame", "k1", "image/png", width=640, height=360)],
        created_at=created_at if created_at is not None else time.time(),
    )


ALL_PAIRS = [(a, b) for a in JobStatus for b in JobStatus]


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_transition_table_is_the_only_authority(current, target):
    if target in TRANSITIONS[current]:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_terminal_states_are_final():
    for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert status.is_finished and not TRANSITIONS[status]


def test_create_get_and_owner_isolation(store: JobStore):
    job = store.create(make_job("a"))
    assert store.get(job.id, "a").spec == SPEC
    assert store.get(job.id, "b") is None
    assert store.get(job.id).media[0].width == 640


def test_illegal_transition_on_a_stored_job_raises(store: JobStore):
    job = store.create(make_job())
    store.transition(job.id, JobStatus.CANCELLED, error_code="cancelled")
    with pytest.raises(IllegalTransition):
        store.transition(job.id, JobStatus.IN_PROGRESS)


def test_claim_is_atomic_across_threads(store: JobStore):
    jobs = [store.create(make_job(created_at=1000.0 + i)) for i in range(12)]
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (job := store.claim(name, ROUTES)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(j.id for j in jobs)
    assert all(store.get(j.id).attempts == 1 for j in jobs)


def test_claim_takes_the_oldest_first(store: JobStore):
    newer = store.create(make_job(created_at=2000.0))
    older = store.create(make_job(created_at=1000.0))
    assert store.claim("w", ROUTES).id == older.id
    assert store.claim("w", ROUTES).id == newer.id
    assert store.claim("w", ROUTES) is None


def test_progress_never_goes_down_and_stops_at_finish(store: JobStore):
    job = store.create(make_job())
    store.claim("w", ROUTES)
    for value, expected in [(10, 10), (5, 10), (40, 40), (39, 40)]:
        store.set_progress(job.id, value)
        assert store.get(job.id).progress == expected
    store.transition(job.id, JobStatus.COMPLETED, progress=100)
    store.set_progress(job.id, 100)
    assert store.get(job.id).progress == 100


def test_completion_requires_the_worker_that_holds_the_job(store: JobStore):
    job = store.create(make_job())
    store.claim("w1", ROUTES)
    with pytest.raises(Conflict):
        store.transition(job.id, JobStatus.COMPLETED, expect=JobStatus.IN_PROGRESS, worker_id="w2")
    store.transition(job.id, JobStatus.COMPLETED, expect=JobStatus.IN_PROGRESS, worker_id="w1")


def test_stale_jobs_are_requeued_then_failed_after_the_attempt_limit(store: JobStore, clock):
    job = store.create(make_job())
    for attempt in (1, 2):
        assert store.claim("dead", ROUTES).attempts == attempt
        assert store.requeue_stale(lease=30, max_attempts=2) == ([], [])  # lease not over
        clock.advance(31)
        requeued, failed = store.requeue_stale(lease=30, max_attempts=2)
        if attempt == 1:
            assert requeued == [job.id] and failed == []
            assert store.get(job.id).status is JobStatus.QUEUED
    assert failed == [job.id]
    final = store.get(job.id)
    assert final.status is JobStatus.FAILED and final.error_code == "worker_lost"


def test_heartbeat_keeps_a_job_from_being_requeued(store: JobStore, clock):
    job = store.create(make_job())
    store.claim("alive", ROUTES)
    clock.advance(20)
    assert store.heartbeat(job.id, "alive")
    clock.advance(20)
    assert store.requeue_stale(lease=30, max_attempts=3) == ([], [])
    assert not store.heartbeat(job.id, "someone-else")


def test_release_does_not_count_the_attempt(store: JobStore):
    job = store.create(make_job())
    store.claim("w", ROUTES)
    assert store.release(job.id, "w")
    again = store.get(job.id)
    assert again.status is JobStatus.QUEUED and again.attempts == 0


def test_list_pages_with_cursor_both_orders(store: JobStore):
    jobs = [store.create(make_job("a", created_at=1000.0 + i)) for i in range(5)]
    store.create(make_job("b"))
    page, more = store.list("a", limit=2)
    assert [j.id for j in page] == [jobs[4].id, jobs[3].id] and more
    page, more = store.list("a", limit=2, after=jobs[3].id)
    assert [j.id for j in page] == [jobs[2].id, jobs[1].id] and more
    page, more = store.list("a", limit=2, after=jobs[1].id)
    assert [j.id for j in page] == [jobs[0].id] and not more
    page, _ = store.list("a", limit=10, order="asc", after=jobs[2].id)
    assert [j.id for j in page] == [jobs[3].id, jobs[4].id]
    with pytest.raises(InvalidRequest):
        store.list("b", after=jobs[0].id)


def test_idempotency_returns_the_same_job_and_refuses_a_different_body(store: JobStore):
    job = store.create(make_job("a"), idempotency=("key-1", "hash-1"))
    assert store.create(make_job("a"), idempotency=("key-1", "hash-1")).id == job.id
    assert store.find_idempotent("a", "key-1", "hash-1").id == job.id
    assert store.find_idempotent("b", "key-1", "hash-1") is None
    with pytest.raises(InvalidRequest) as refused:
        store.find_idempotent("a", "key-1", "hash-2")
    assert refused.value.code == "idempotency_key_reused"


def test_expired_jobs_are_listed_once(store: JobStore):
    job = store.create(make_job())
    store.claim("w", ROUTES)
    store.transition(job.id, JobStatus.COMPLETED, expires_at=time.time() - 1, result={"a": 1})
    assert [j.id for j in store.expired(time.time())] == [job.id]
    store.mark_swept(job.id)
    assert store.expired(time.time()) == []
    assert store.get(job.id).result == {}


def test_engine_state_survives(store: JobStore):
    job = store.create(make_job())
    store.save_engine_state(job.id, {"task_id": "t-1"})
    assert store.get(job.id).engine_state == {"task_id": "t-1"}


def test_count_uses_the_list_filters(store: JobStore):
    for i in range(3):
        store.create(make_job("a", created_at=1000.0 + i))
    store.create(make_job("b"))
    assert store.count("a") == 3
    assert store.count("a", created_from=1001.0) == 2
    assert store.count("a", statuses=[JobStatus.COMPLETED]) == 0
    assert store.count("a", model="other") == 0
    assert store.count_unfinished("a") == 3
