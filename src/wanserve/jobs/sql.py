"""Transactions on the job tables: outages reported as `StoreUnavailable`, status writes.

Passing database failures (a dropped or refused connection, a restart, a full disk, a
lock or pool wait that ran out) leave every session here as `StoreUnavailable`; other
errors (constraints, bad SQL, values the database refuses) go through unchanged.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from wanserve.errors import StoreUnavailable
from wanserve.jobs.db import JobRow, UsageRow, make_engine, migrate, single_reads, writer
from wanserve.jobs.model import JobStatus, check_transition
from wanserve.jobs.webhooks import events_for

logger = logging.getLogger(__name__)

# The PostgreSQL channel a job's id is sent on at each status or progress change.
CHANGES_CHANNEL = "wanserve_jobs"
# Below this much free space the SQLite database's disk counts as full (readiness).
MIN_FREE_BYTES = 1024 * 1024


@contextmanager
def outage_as_unavailable() -> Iterator[None]:
    """Turn the database's passing failures into `StoreUnavailable`; others go through.

    Passing: a dropped or refused connection, a restart, a full disk, a lock or pool
    wait that ran out. Not: constraint violations, bad SQL, values the database refuses.
    """
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout) as exc:
        raise _unavailable(exc) from exc
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise _unavailable(exc) from exc


def usage_of(row: JobRow, completed_at: float) -> UsageRow:
    """The usage record of a job that just completed: seconds made, by key, model, size, day."""
    duration = (row.result or {}).get("duration")
    seconds = float(duration) if duration is not None else float(row.spec.get("seconds", 0))
    day = datetime.fromtimestamp(completed_at, UTC).strftime("%Y-%m-%d")
    return UsageRow(
        job_id=row.id,
        owner=row.owner,
        model=row.model,
        size=str(row.spec.get("size", "")),
        day=day,
        seconds=seconds,
        completed_at=completed_at,
    )


def _unavailable(exc: Exception) -> StoreUnavailable:
    cause = getattr(exc, "orig", None) or exc
    detail = (str(cause).strip().splitlines() or [""])[0][:200]
    full = (
        getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or getattr(cause, "sqlstate", None) == "53100"  # PostgreSQL disk_full
    )
    logger.warning("job database unavailable: %s: %s", type(cause).__name__, detail)
    return StoreUnavailable(
        "The job database is unavailable right now; try again shortly.",
        reason="disk full" if full else "unreachable",
    )


class JobRows:
    """Sessions on the job tables and the compare-and-set writes every state change uses."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time):
        self.engine = engine
        # Every time the store stamps or compares (leases, idempotency windows, expiry)
        # comes from here, so tests move time instead of sleeping.
        self.clock = clock
        self._reads = sessionmaker(engine, expire_on_commit=False)
        self._writes = sessionmaker(writer(engine), expire_on_commit=False)
        self._single = single_reads(engine)
        # A SQLite read is a local file read (WAL: it never waits for a writer) that takes
        # less time than handing it to a thread and back; a server's may wait on the network.
        self.reads_inline = engine.dialect.name == "sqlite"

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time) -> Self:
        """Connect to `url` and bring its schema up to date."""
        engine = make_engine(url)
        with outage_as_unavailable():
            migrate(engine)
        return cls(engine, clock=clock)

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with outage_as_unavailable(), self._reads.begin() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with outage_as_unavailable(), self._writes.begin() as session:
            yield session

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with outage_as_unavailable(), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def _connect_single(self) -> Iterator[Connection]:
        """A connection for one SELECT (its own snapshot, so no transaction around it)."""
        with outage_as_unavailable(), self._single.connect() as connection:
            yield connection

    def _update(self, *guard: Any, changed: str | None = None, **values: Any) -> bool:
        """One compare-and-set UPDATE of a single job row; True when it matched.

        Never a status: those go through `_apply`, which checks the transition table.
        `changed` (a job id) marks a change clients watch (progress): the job's version
        is counted up and listeners told, in the same transaction.
        """
        assert "status" not in values, "status changes go through _apply"
        if changed is not None:
            values["version"] = JobRow.version + 1
        with self._write() as session:
            result = session.execute(update(JobRow).where(*guard).values(**values))
            matched = bool(result.rowcount == 1)  # type: ignore[attr-defined]
            if matched and changed is not None:
                self._announce(session, changed)
        return matched

    def _apply(
        self, job_id: str, current: JobStatus, target: JobStatus, *guard: Any, **values: Any
    ) -> bool:
        """The one writer of job statuses: `current -> target` if the table allows it.

        Atomic as a compare-and-set on the status (and any extra `guard`): True when the
        job was still `current` and moved, False when something else moved it first.
        Raises `IllegalTransition` for a move the table forbids.
        """
        check_transition(current, target)
        with self._write() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == current.value, *guard)
                .values(status=target.value, version=JobRow.version + 1, **values)
            )
            moved = bool(result.rowcount == 1)  # type: ignore[attr-defined]
            if moved:
                self._record_move(session, job_id, target)
        return moved

    def _record_move(self, session: Session, job_id: str, target: JobStatus) -> None:
        """What a status change writes besides the job, in its transaction (all or nothing).

        A terminal change writes the job's webhook deliveries to the outbox and, for a
        completed job, its usage; every change tells the event streams' listeners.
        """
        if target.is_finished:
            row = session.get(JobRow, job_id)
            assert row is not None
            now = row.completed_at if row.completed_at is not None else self.clock()
            session.add_all(
                events_for(row.id, row.owner, list(row.webhooks or []), target, now, row.error_code)
            )
            if target is JobStatus.COMPLETED:
                session.merge(usage_of(row, now))
        self._announce(session, job_id)

    def _announce(self, session: Session, job_id: str) -> None:
        """Tell other processes' event streams that `job_id` changed (at commit)."""
        if self.engine.dialect.name == "postgresql":
            session.execute(select(func.pg_notify(CHANGES_CHANNEL, job_id)))

    def _holds(self, job_id: str, worker_id: str, status: JobStatus) -> bool:
        """Whether `worker_id` holds the job in `status`: an earlier try of ours went through.

        A write retried after its answer was lost (the connection dropped at COMMIT) finds
        its own result; worker ids are unique, so nobody else can have made it.
        """
        with self._connect() as connection:
            found = connection.execute(
                select(JobRow.id).where(
                    JobRow.id == job_id, JobRow.worker_id == worker_id, JobRow.status == status
                )
            ).first()
        return found is not None

    @staticmethod
    def _held(job_id: str, worker_id: str) -> tuple[Any, ...]:
        """The guard of a running job that `worker_id` still holds."""
        return (
            JobRow.id == job_id,
            JobRow.worker_id == worker_id,
            JobRow.status == JobStatus.IN_PROGRESS.value,
        )

    def ping(self) -> None:
        """Raise `StoreUnavailable` unless the database answers (and, on SQLite, has room)."""
        with self._connect() as connection:
            connection.execute(text("SELECT 1"))
        database = self.engine.url.database
        if (
            self.engine.dialect.name == "sqlite"
            and database not in (None, "", ":memory:")
            and shutil.disk_usage(Path(str(database)).parent).free < MIN_FREE_BYTES
        ):
            raise StoreUnavailable("The job database's disk is full.", reason="disk full")
