"""A job store on SQLite, and on the local PostgreSQL for tests marked `services`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ManualClock
from pgtools import throwaway_schema
from wanserve.jobs.store import JobStore


@pytest.fixture
def clock() -> ManualClock:
    """The store's clock in this test."""
    return ManualClock()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)],
)
def store(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[JobStore]:
    """A freshly migrated store on `clock`; PostgreSQL gets a throw-away schema per test."""
    if request.param == "sqlite":
        job_store = JobStore.open(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
        yield job_store
        job_store.engine.dispose()
        return
    with throwaway_schema() as url:
        job_store = JobStore.open(url, clock=clock)
        yield job_store
        job_store.engine.dispose()
