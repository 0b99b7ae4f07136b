"""A job store on SQLite, and on the local PostgreSQL for tests marked `services`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from helpers import ManualClock
from wanserve.jobs.store import JobStore

POSTGRES_URL = os.environ.get(
    "WANSERVE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


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
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    job_store = JobStore.open(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", clock=clock)
    yield job_store
    job_store.engine.dispose()
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()
