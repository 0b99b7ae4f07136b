"""Token buckets in the database: the in-process bucket's arithmetic, one limit for all."""

from __future__ import annotations

import pytest

from helpers import ManualClock, race
from wanserve.jobs.buckets import SharedBucket
from wanserve.jobs.db import make_engine
from wanserve.jobs.store import JobStore


def test_a_shared_bucket_grants_a_burst_then_refills_at_the_rate(
    store: JobStore, clock: ManualClock
):
    bucket = SharedBucket(store, rate=2.0, burst=3)
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(0.5)
    assert bucket.take("b") == 0.0  # another owner has its own bucket
    clock.now += 0.5
    assert bucket.take("a") == 0.0
    clock.now += 100
    assert [bucket.take("a") for _ in range(4)][-1] == pytest.approx(0.5)  # capped at burst
    clock.now -= 10  # another process's clock, a little behind: no tokens taken back
    assert bucket.take("a") == pytest.approx(0.5)


def test_two_buckets_on_one_database_are_one_limit(store: JobStore):
    # Two API processes hold a bucket each on the same database; 40 takes at once.
    other = JobStore(make_engine(store.engine.url.render_as_string(hide_password=False)))
    buckets = [SharedBucket(store, rate=1e-6, burst=5), SharedBucket(other, rate=1e-6, burst=5)]
    granted = race(40, lambda i: buckets[i % 2].take("a"))
    assert [g for g in granted if isinstance(g, Exception)] == []
    assert granted.count(0.0) == 5
    other.engine.dispose()
