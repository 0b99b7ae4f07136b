"""Database tables, their rows as job records, engine set-up; Alembic applies the schema."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from wanserve.jobs.model import Job, JobSpec, JobStatus, MediaRef

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class Base(DeclarativeBase):
    """Declarative base of wanserve's tables."""


class JobRow(Base):
    """One video job."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    engine: Mapped[str] = mapped_column(String(64))
    # The served model whose workers run the job: `model`, or the model it overflowed to.
    route: Mapped[str] = mapped_column(String(128))
    source_api: Mapped[str] = mapped_column(String(16), default="openai")
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    media: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    engine_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    completed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    files_deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    remixed_from: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Where its webhook events go: [{"url", "secret": "global"|"key", "checked"}].
    webhooks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # Counts every status and progress change: the id of the live event stream's events.
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        Index("ix_jobs_owner_created", "owner", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_expires_at", "expires_at"),
        # The fair claim: each key's oldest queued job of a route, each key's running count.
        Index("ix_jobs_route_owner", "status", "route", "owner", "created_at", "id"),
        # Each key's latest start on a route (who was served least recently); only started
        # jobs, so the newest start is the last entry, not behind the key's queued jobs.
        Index(
            "ix_jobs_owner_route_started",
            "owner",
            "route",
            "started_at",
            postgresql_where=text("started_at IS NOT NULL"),
            sqlite_where=text("started_at IS NOT NULL"),
        ),
        # A route's oldest waiting jobs (readiness, overflow and queue time-outs).
        Index("ix_jobs_route_waiting", "status", "route", "created_at", "id"),
    )


class IdempotencyRow(Base):
    """An `Idempotency-Key` seen from one owner, and the job it made."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class WorkerRow(Base):
    """A live worker process, as it last reported itself."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    models: Mapped[list[str]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(128))
    # Each served model's engine in that process: not_loaded, loading, loaded or failed.
    engines: Mapped[dict[str, str]] = mapped_column(JSON)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class OutboxRow(Base):
    """One webhook delivery: an event for one target, written with the change that caused it."""

    __tablename__ = "webhook_outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the `webhook-id`
    event_id: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(16))  # which secret signs it: global | key
    checked: Mapped[bool] = mapped_column(Boolean)  # a client's URL: the SSRF rules apply
    body: Mapped[str] = mapped_column(Text)
    # pending, delivered, gone (the receiver answered 410) or failed (retries ran out).
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    last_attempt_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_webhook_outbox_due", "state", "next_attempt_at"),)


class UsageRow(Base):
    """Seconds of video one completed job made, kept after the job is deleted."""

    __tablename__ = "usage"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    size: Mapped[str] = mapped_column(String(32))
    day: Mapped[str] = mapped_column(String(10))  # UTC, YYYY-MM-DD
    seconds: Mapped[float] = mapped_column(Float)
    completed_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ix_usage_owner_day", "owner", "day"),
        Index("ix_usage_day", "day"),
    )


class RateBucketRow(Base):
    """One key's token bucket of the create rate: tokens left when last counted."""

    __tablename__ = "rate_buckets"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    counted_at: Mapped[float] = mapped_column(Float)


class StageMetricRow(Base):
    """One bucket (or the sum) of a stage's duration histogram, shared by every process."""

    __tablename__ = "stage_metrics"

    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    le: Mapped[str] = mapped_column(String(16), primary_key=True)  # "0.5", "+Inf" or "sum"
    value: Mapped[float] = mapped_column(Float)


# Execution option of the write transactions (see `writer`).
WRITE = "wanserve_write"
# Execution option of reads that are one statement (see `single_reads`).
SINGLE = "wanserve_single"
# SQLite connections kept open: as many as the API's thread pool (anyio's 40) runs at
# once, so a burst of requests reuses them instead of opening (and tuning) new ones.
SQLITE_POOL = 40
# Arbitrary but fixed: the PostgreSQL advisory lock held while the schema is migrated.
MIGRATION_LOCK = 0x77616E7365727665  # "wanserve"


def job_from_row(row: Any) -> Job:
    """The job record a row holds: a `JobRow`, or a Core row of the jobs table's columns."""
    return Job(
        id=row.id,
        owner=row.owner,
        model=row.model,
        engine=row.engine,
        status=JobStatus(row.status),
        spec=JobSpec.from_dict(row.spec),
        media=[MediaRef.from_dict(m) for m in row.media],
        progress=row.progress,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        expires_at=row.expires_at,
        error_code=row.error_code,
        error_message=row.error_message,
        result=dict(row.result or {}),
        metadata=dict(row.meta or {}),
        engine_state=dict(row.engine_state or {}),
        attempts=row.attempts,
        remixed_from=row.remixed_from,
        source_api=row.source_api,
        route=row.route,
        webhooks=list(row.webhooks or []),
        version=row.version or 0,
    )


def new_job_row(job: Job) -> JobRow:
    """The row of a job that was just made (queued, nothing run yet)."""
    return JobRow(
        id=job.id,
        owner=job.owner,
        model=job.model,
        engine=job.engine,
        route=job.route,
        source_api=job.source_api,
        status=JobStatus.QUEUED.value,
        progress=0,
        spec=job.spec.to_dict(),
        media=[m.to_dict() for m in job.media],
        result={},
        meta=dict(job.metadata),
        engine_state={},
        created_at=job.created_at,
        attempts=0,
        remixed_from=job.remixed_from,
        webhooks=list(job.webhooks) or None,
        version=0,
    )


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 itself would BEGIN only before a write, so a transaction that read first could
    # not take the write lock later in WAL mode without failing at once: SQLAlchemy emits
    # BEGIN instead (its documented recipe), see `_begin_sqlite`.
    dbapi_connection.isolation_level = None
    # WAL lets the API read while a worker writes; the busy timeout makes concurrent
    # writers from several processes wait for each other instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    _use_wal(cursor)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put a (new) database file in WAL mode; a no-op for one that already is."""
    # Switching needs the file to itself, and SQLite answers "locked" at once rather than
    # waiting when another process (one migrating it, say) holds it at that moment.
    for attempt in range(100):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05)


def _begin_sqlite(connection: Connection) -> None:
    # A write transaction takes the database's write lock at BEGIN, waiting its turn:
    # what it reads is then still true when it writes (admission, idempotency, migrations).
    options = connection.get_execution_options()
    if options.get(SINGLE, False):
        # One SELECT is its own snapshot: sqlite3 runs it in autocommit mode, and the
        # BEGIN and ROLLBACK around it would double what a poll costs.
        return
    connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE, False) else "BEGIN")


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for `url`, tuned for SQLite when that is what it is."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        pool: dict[str, Any] = {}
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": SQLITE_POOL, "max_overflow": SQLITE_POOL}
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # pre_ping replaces a pooled connection the server dropped (a restart, a killed backend)
    # before it is used; the connect time-out turns an unreachable server into an error soon.
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args={"connect_timeout": 5}
    )


def writer(engine: Engine) -> Engine:
    """The same engine, its transactions marked as writes (IMMEDIATE on SQLite)."""
    return engine.execution_options(**{WRITE: True})


def single_reads(engine: Engine) -> Engine:
    """The same engine for reads of one statement (no BEGIN of their own on SQLite)."""
    return engine.execution_options(**{SINGLE: True})


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision; safe for many processes at once.

    One transaction holds a lock for the whole upgrade (an advisory lock on PostgreSQL,
    the write lock on SQLite): the first process migrates, the others wait and then find
    the schema current.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
