"""Routing in the store: claims filtered by model, fair share across keys, overflow, time-outs.

Every test runs on SQLite and on PostgreSQL (`services`); the races use real threads.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from test_job_store import make_job

from helpers import ManualClock
from wanserve.engines.registry import ModelRoute
from wanserve.jobs.model import Job, JobStatus
from wanserve.jobs.routing import apply_deadlines
from wanserve.jobs.store import JobStore

ROUTES = {
    "gpu": ModelRoute("gpu", "diffusers", overflow="hosted", max_wait=60),
    # Overflow back to gpu would ping-pong; a job moves once, so it does not.
    "hosted": ModelRoute("hosted", "dashscope", overflow="gpu", max_wait=60),
    "local": ModelRoute("local", "keyframe", queue_timeout=30),
}


def queue(store: JobStore, model: str, owner: str = "key-a", created_at: float = 1000.0) -> Job:
    """A queued job of `model` (on its own model's route and engine)."""
    engine = ROUTES[model].engine if model in ROUTES else "keyframe"
    job = replace(make_job(owner, created_at), model=model, route=model, engine=engine)
    return store.create(job)


def run_in_order(store: JobStore, clock: ManualClock, routes: list[str]) -> list[Job]:
    """One worker: claim, finish, claim again, until nothing is left; the claims in order."""
    order = []
    while (job := store.claim("w", routes)) is not None:
        order.append(job)
        clock.advance(1)
        store.transition(job.id, JobStatus.COMPLETED, worker_id="w")
    return order


# -- claims filtered by model ------------------------------------------------------------


def test_a_claim_takes_only_jobs_of_the_models_it_serves(store: JobStore):
    first, second = queue(store, "a", created_at=1001.0), queue(store, "a", created_at=1002.0)
    other = queue(store, "b", created_at=1000.0)  # older, but not ours
    assert store.claim("wa", ["a"]).id == first.id
    assert store.claim("wa", ["a"]).id == second.id
    assert store.claim("wa", ["a"]) is None
    assert store.claim_job(other.id, "wa", ["a"]) is None  # a broker message cannot cross
    assert store.get(other.id).status is JobStatus.QUEUED
    assert store.claim("wb", ["b", "c"]).id == other.id


# -- fair share --------------------------------------------------------------------------


def test_one_key_burst_does_not_starve_another_key(store: JobStore, clock: ManualClock):
    burst = [queue(store, "m", "key-a", 1000.0 + i) for i in range(10)]
    late = queue(store, "m", "key-b", 1100.0)
    order = [job.id for job in run_in_order(store, clock, ["m"])]
    assert order.index(late.id) < order.index(burst[4].id)
    assert [i for i in order if i != late.id] == [job.id for job in burst]  # oldest first


def test_the_key_with_fewest_running_jobs_goes_first(store: JobStore, clock: ManualClock):
    for index in range(2):
        queue(store, "m", "key-a", 900.0 + index)
        store.claim("w", ["m"])
        clock.advance(1)
    queue(store, "m", "key-b", 950.0)
    store.claim("w", ["m"])
    waiting_a = queue(store, "m", "key-a", 1000.0)
    waiting_b = queue(store, "m", "key-b", 1001.0)
    waiting_c = queue(store, "m", "key-c", 1002.0)
    # Running: a 2, b 1, c 0. The newest job goes first, then b's, then a's.
    assert [store.claim("w", ["m"]).id for _ in range(3)] == [
        waiting_c.id,
        waiting_b.id,
        waiting_a.id,
    ]


def test_running_jobs_count_per_model(store: JobStore):
    queue(store, "other", "key-a", 900.0)
    store.claim("w", ["other"])  # key a is busy elsewhere, not on m
    mine = queue(store, "m", "key-a", 1000.0)
    queue(store, "m", "key-b", 1001.0)
    assert store.claim("w", ["m"]).id == mine.id


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_claimers_share_fairly_and_take_each_job_once(store: JobStore, round_: int):
    burst = [queue(store, "m", "key-a", 1000.0 + i) for i in range(10)]
    others = [queue(store, "m", "key-b", 1100.0), queue(store, "m", "key-c", 1101.0)]
    elsewhere = [queue(store, "x", "key-a", 900.0 + i) for i in range(3)]
    barrier = threading.Barrier(4)
    first: dict[str, Job] = {}
    claims: list[tuple[str, Job]] = []
    lock = threading.Lock()

    def claimer(name: str, routes: list[str]) -> None:
        barrier.wait()
        job = store.claim(name, routes)
        assert job is not None
        with lock:
            first[name] = job
        barrier.wait()  # the first claims are all in before anyone claims again
        while job is not None:
            with lock:
                claims.append((name, job))
            job = store.claim(name, routes)

    threads = [threading.Thread(target=claimer, args=(f"m{i}", ["m"])) for i in range(3)]
    threads.append(threading.Thread(target=claimer, args=("x0", ["x"])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Three claimers on m at once: one job of each key, never two of the burst.
    assert sorted(first[f"m{i}"].owner for i in range(3)) == ["key-a", "key-b", "key-c"]
    taken = [job.id for _, job in claims]
    assert sorted(taken) == sorted(job.id for job in [*burst, *others, *elsewhere])
    assert all(job.route == ("x" if name == "x0" else "m") for name, job in claims)
    assert all(store.get(job_id).attempts == 1 for job_id in taken)


# -- overflow and time-outs ---------------------------------------------------------------


def deadlines(store: JobStore) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    published: list[tuple[str, str]] = []
    moved, timed_out = apply_deadlines(
        store, ROUTES, lambda job_id, route: published.append((job_id, route))
    )
    return moved, timed_out, published


def test_an_unclaimed_job_overflows_once_after_max_wait(store: JobStore, clock: ManualClock):
    job = queue(store, "gpu", created_at=clock.now)
    clock.advance(59)
    assert deadlines(store) == ([], [], [])
    clock.advance(2)
    assert deadlines(store) == ([job.id], [], [(job.id, "hosted")])
    moved = store.get(job.id)
    assert (moved.model, moved.route, moved.engine) == ("gpu", "hosted", "dashscope")
    assert moved.metadata["overflow"] == {
        "from": "gpu",
        "to": "hosted",
        "from_engine": "diffusers",
        "waited_seconds": 61.0,
    }
    clock.advance(300)
    assert deadlines(store) == ([], [], [])  # hosted overflows to gpu, but a job moves once
    assert store.claim("g", ["gpu"]) is None
    assert store.claim("h", ["hosted"]).id == job.id


def test_a_job_once_started_neither_overflows_nor_times_out(store: JobStore, clock: ManualClock):
    on_gpu = queue(store, "gpu", created_at=clock.now)
    on_local = queue(store, "local", created_at=clock.now)
    for job in (on_gpu, on_local):
        store.claim_job(job.id, "w")
        store.release(job.id, "w")  # back in the queue, but a worker did take it
    clock.advance(3600)
    assert deadlines(store) == ([], [], [])


def test_queue_timeout_fails_a_job_no_worker_took(store: JobStore, clock: ManualClock):
    job = queue(store, "local", created_at=clock.now)
    clock.advance(29)
    assert deadlines(store) == ([], [], [])
    clock.advance(2)
    assert deadlines(store) == ([], [job.id], [])
    failed = store.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error_code == "timeout"
    assert "30 seconds" in failed.error_message
    assert store.claim("w", ["local"]) is None


@pytest.mark.parametrize("round_", range(8))
def test_a_move_racing_a_claim_runs_the_job_once(
    store: JobStore, clock: ManualClock, round_: int
):
    job = queue(store, "gpu", created_at=clock.now - 120)
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def gpu_worker() -> None:
        barrier.wait()
        outcome["gpu"] = store.claim("g", ["gpu"])

    def mover_then_hosted_worker() -> None:
        barrier.wait()
        outcome["moved"] = deadlines(store)[0] == [job.id]
        outcome["hosted"] = store.claim("h", ["hosted"])

    threads = [threading.Thread(target=run) for run in (gpu_worker, mover_then_hosted_worker)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [name for name in ("gpu", "hosted") if outcome[name] is not None]
    assert winners == (["hosted"] if outcome["moved"] else ["gpu"])
    final = store.get(job.id)
    assert final.status is JobStatus.IN_PROGRESS and final.attempts == 1
    assert final.route == ("hosted" if outcome["moved"] else "gpu")
