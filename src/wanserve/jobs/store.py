"""The job store: every read and state change of a job goes through here.

State changes are compare-and-set updates (`... WHERE id = :id AND status = :seen`), so
two processes racing on one job cannot both win: that is what makes a claim atomic on
SQLite and PostgreSQL alike, without locks held across the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from wanserve.errors import Conflict, InvalidRequest
from wanserve.jobs.db import IdempotencyRow, JobRow, make_engine, migrate
from wanserve.jobs.model import Job, JobSpec, JobStatus, MediaRef, check_transition

IDEMPOTENCY_WINDOW = 24 * 3600
# Aliases: inside JobStore, `list` names the method.
Jobs = list[Job]
JobIds = list[str]
Statuses = list[JobStatus]


def _to_job(row: JobRow) -> Job:
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
    )


class JobStore:
    """Jobs in a SQL database (SQLite by default, PostgreSQL for several machines)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time):
        self.engine = engine
        # Every time the store stamps or compares (leases, idempotency windows, expiry)
        # comes from here, so tests move time instead of sleeping.
        self.clock = clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.time) -> JobStore:
        """Connect to `url` and bring its schema up to date."""
        engine = make_engine(url)
        migrate(engine)
        return cls(engine, clock=clock)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def _update(self, *guard: Any, **values: Any) -> bool:
        """One compare-and-set UPDATE of a single job row; True when it matched.

        Never a status: those go through `_apply`, which checks the transition table.
        """
        assert "status" not in values, "status changes go through _apply"
        with self._session() as session:
            result = session.execute(update(JobRow).where(*guard).values(**values))
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def _apply(
        self, job_id: str, current: JobStatus, target: JobStatus, *guard: Any, **values: Any
    ) -> bool:
        """The one writer of job statuses: `current -> target` if the table allows it.

        Atomic as a compare-and-set on the status (and any extra `guard`): True when the
        job was still `current` and moved, False when something else moved it first.
        Raises `IllegalTransition` for a move the table forbids.
        """
        check_transition(current, target)
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == current.value, *guard)
                .values(status=target.value, **values)
            )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    @staticmethod
    def _held(job_id: str, worker_id: str) -> tuple[Any, ...]:
        """The guard of a running job that `worker_id` still holds."""
        return (
            JobRow.id == job_id,
            JobRow.worker_id == worker_id,
            JobRow.status == JobStatus.IN_PROGRESS.value,
        )

    def ping(self) -> None:
        """Raise if the database cannot be reached (readiness probe)."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    # -- creating and reading ------------------------------------------------------

    def create(self, job: Job, *, idempotency: tuple[str, str] | None = None) -> Job:
        """Insert a new queued job; with `(key, request_hash)`, return the earlier job instead.

        Raises `Conflict` (code `idempotency_key_reused`) when the key was used within
        the window for a different request.
        """
        with self._session() as session:
            if idempotency is not None:
                earlier = self._idempotent_job(session, job.owner, *idempotency, now=job.created_at)
                if earlier is not None:
                    return earlier
            session.add(
                JobRow(
                    id=job.id,
                    owner=job.owner,
                    model=job.model,
                    engine=job.engine,
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
                )
            )
        return job

    def _idempotent_job(
        self, session: Session, owner: str, key: str, request_hash: str, *, now: float
    ) -> Job | None:
        row = session.get(IdempotencyRow, (owner, key))
        if row is not None and now - row.created_at < IDEMPOTENCY_WINDOW:
            if row.request_hash != request_hash:
                raise InvalidRequest(
                    "This Idempotency-Key was already used with a different request body.",
                    code="idempotency_key_reused",
                    param="Idempotency-Key",
                )
            earlier = session.get(JobRow, row.job_id)
            if earlier is not None:
                return _to_job(earlier)
        return None

    def remember_idempotency(self, owner: str, key: str, request_hash: str, job_id: str) -> None:
        """Record that `key` made `job_id` (replacing an expired record)."""
        with self._session() as session:
            session.merge(
                IdempotencyRow(
                    owner=owner,
                    key=key,
                    job_id=job_id,
                    request_hash=request_hash,
                    created_at=self.clock(),
                )
            )

    def find_idempotent(self, owner: str, key: str, request_hash: str) -> Job | None:
        """The job an unexpired `key` made, or None; raises if the body differs."""
        with self._session() as session:
            return self._idempotent_job(session, owner, key, request_hash, now=self.clock())

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None; with `owner`, other owners' jobs are None too."""
        with self._session() as session:
            row = session.get(JobRow, job_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            return _to_job(row)

    def status_of(self, job_id: str) -> JobStatus | None:
        """Just the status (None once deleted); cheap enough for frequent cancel checks."""
        with self.engine.connect() as connection:
            value = connection.execute(
                select(JobRow.status).where(JobRow.id == job_id)
            ).scalar_one_or_none()
        return JobStatus(value) if value is not None else None

    def list(
        self,
        owner: str,
        *,
        limit: int = 20,
        after: str | None = None,
        order: str = "desc",
        statuses: Statuses | None = None,
        model: str | None = None,
        created_from: float | None = None,
        created_to: float | None = None,
        offset: int = 0,
    ) -> tuple[Jobs, bool]:
        """One page of an owner's jobs, and whether more follow.

        `after` is a job id of this owner: the page starts right after it in `order`.
        """
        with self._session() as session:
            query = select(JobRow).where(JobRow.owner == owner)
            newest_first = order == "desc"
            if after is not None:
                anchor = session.get(JobRow, after)
                if anchor is None or anchor.owner != owner:
                    raise InvalidRequest(f"No video found with id '{after}'.", param="after")
                key = (JobRow.created_at, JobRow.id)
                anchor_key = (anchor.created_at, anchor.id)
                query = query.where(
                    _tuple_lt(key, anchor_key) if newest_first else _tuple_lt(anchor_key, key)
                )
            query = query.where(*_matching(statuses, model, created_from, created_to))
            if newest_first:
                query = query.order_by(JobRow.created_at.desc(), JobRow.id.desc())
            else:
                query = query.order_by(JobRow.created_at.asc(), JobRow.id.asc())
            rows = session.scalars(query.offset(offset).limit(limit + 1)).all()
            return [_to_job(r) for r in rows[:limit]], len(rows) > limit

    def count(
        self,
        owner: str,
        *,
        statuses: Statuses | None = None,
        model: str | None = None,
        created_from: float | None = None,
        created_to: float | None = None,
    ) -> int:
        """How many of an owner's jobs match the same filters as `list`."""
        with self.engine.connect() as connection:
            query = (
                select(func.count())
                .select_from(JobRow)
                .where(
                    JobRow.owner == owner,
                    *_matching(statuses, model, created_from, created_to),
                )
            )
            return int(connection.execute(query).scalar_one())

    def count_unfinished(self, owner: str) -> int:
        """How many of an owner's jobs are queued or running."""
        return self.count(owner, statuses=[JobStatus.QUEUED, JobStatus.IN_PROGRESS])

    def count_by_status(self) -> dict[str, int]:
        """How many jobs of all owners are in each state (for metrics)."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(JobRow.status, func.count()).group_by(JobRow.status)
            ).all()
        return {status: int(count) for status, count in rows}

    # -- state changes ---------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        expect: JobStatus | None = None,
        worker_id: str | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `target` atomically, if the transition table allows it.

        `expect` pins the state the caller saw; without it the current state is read.
        `worker_id` makes the move only if that worker still holds the job. Raises
        `IllegalTransition` for a move the table forbids and `Conflict` when the job
        changed under us (or is gone).
        """
        guard = [JobRow.worker_id == worker_id] if worker_id is not None else []
        for _ in range(5):
            current = expect or self.status_of(job_id)
            if current is None:
                raise Conflict("the job no longer exists", code="not_found")
            if self._apply(job_id, current, target, *guard, **fields):
                job = self.get(job_id)
                assert job is not None
                return job
            if expect is not None:
                break
        raise Conflict(f"job {job_id} changed state concurrently", code="invalid_state")

    def claim(self, worker_id: str) -> Job | None:
        """Take the oldest queued job for `worker_id`, or None when there is none."""
        while True:
            with self.engine.connect() as connection:
                job_id = connection.execute(
                    select(JobRow.id)
                    .where(JobRow.status == JobStatus.QUEUED.value)
                    .order_by(JobRow.created_at, JobRow.id)
                    .limit(1)
                ).scalar_one_or_none()
            if job_id is None:
                return None
            job = self.claim_job(job_id, worker_id)
            if job is not None:
                return job
            # Another worker took it between our read and our update: look again.

    def claim_job(self, job_id: str, worker_id: str) -> Job | None:
        """Take this one job for `worker_id` if it is still queued, else None."""
        now = self.clock()
        won = self._apply(
            job_id,
            JobStatus.QUEUED,
            JobStatus.IN_PROGRESS,
            worker_id=worker_id,
            started_at=now,
            heartbeat_at=now,
            attempts=JobRow.attempts + 1,
        )
        return self.get(job_id) if won else None

    def queued_before(self, cutoff: float, limit: int = 1000) -> JobIds:
        """Ids of jobs queued since before `cutoff`, oldest first (to announce them again)."""
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(JobRow.id)
                    .where(JobRow.status == JobStatus.QUEUED.value, JobRow.created_at < cutoff)
                    .order_by(JobRow.created_at, JobRow.id)
                    .limit(limit)
                ).scalars()
            )

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """Extend a running job's lease; False when the job is no longer ours to run."""
        return self._update(*self._held(job_id, worker_id), heartbeat_at=self.clock())

    def set_progress(self, job_id: str, progress: int) -> None:
        """Raise a running job's progress; never lowers it, never touches finished jobs."""
        self._update(
            JobRow.id == job_id,
            JobRow.status == JobStatus.IN_PROGRESS.value,
            JobRow.progress < progress,
            progress=progress,
        )

    def save_engine_state(self, job_id: str, state: dict[str, Any]) -> None:
        """Persist what an engine needs to resume this job after a restart."""
        with self._session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(engine_state=state))

    def requeue_stale(self, *, lease: float, max_attempts: int) -> tuple[JobIds, JobIds]:
        """Re-queue running jobs whose worker stopped heart-beating; fail those out of tries.

        Returns (requeued ids, failed ids).
        """
        cutoff = self.clock() - lease
        with self._session() as session:
            stale = session.scalars(
                select(JobRow).where(
                    JobRow.status == JobStatus.IN_PROGRESS.value, JobRow.heartbeat_at < cutoff
                )
            ).all()
            candidates = [(row.id, row.attempts) for row in stale]
        requeued: JobIds = []
        failed: JobIds = []
        for job_id, attempts in candidates:
            if attempts >= max_attempts:
                target, fields = (
                    JobStatus.FAILED,
                    {
                        "error_code": "worker_lost",
                        "error_message": f"The worker running this job stopped {attempts} times.",
                        "completed_at": self.clock(),
                    },
                )
            else:
                target, fields = JobStatus.QUEUED, {"worker_id": None}
            moved = self._apply(
                job_id, JobStatus.IN_PROGRESS, target, JobRow.heartbeat_at < cutoff, **fields
            )
            if moved:
                (failed if target is JobStatus.FAILED else requeued).append(job_id)
        return requeued, failed

    def release(self, job_id: str, worker_id: str) -> bool:
        """Hand a running job back to the queue without counting the attempt (shutdown)."""
        return self._apply(
            job_id,
            JobStatus.IN_PROGRESS,
            JobStatus.QUEUED,
            JobRow.worker_id == worker_id,
            worker_id=None,
            attempts=JobRow.attempts - 1,
        )

    def expired(self, now: float, limit: int = 100) -> Jobs:
        """Finished jobs whose files are past their expiry and not yet swept."""
        with self._session() as session:
            rows = session.scalars(
                select(JobRow)
                .where(
                    JobRow.expires_at.is_not(None),
                    JobRow.expires_at <= now,
                    JobRow.files_deleted_at.is_(None),
                )
                .limit(limit)
            ).all()
            return [_to_job(r) for r in rows]

    def mark_swept(self, job_id: str) -> None:
        """Forget an expired job's outputs; the record stays so clients learn it expired."""
        with self._session() as session:
            row = session.get(JobRow, job_id)
            if row is not None:
                row.result = {}
                row.files_deleted_at = self.clock()

    def delete(self, job_id: str) -> None:
        """Remove the record for good."""
        with self._session() as session:
            session.execute(delete(JobRow).where(JobRow.id == job_id))


def _matching(
    statuses: Statuses | None,
    model: str | None,
    created_from: float | None,
    created_to: float | None,
) -> list[Any]:
    """WHERE conditions of the optional list filters."""
    conditions: list[Any] = []
    if statuses:
        conditions.append(JobRow.status.in_([s.value for s in statuses]))
    if model:
        conditions.append(JobRow.model == model)
    if created_from is not None:
        conditions.append(JobRow.created_at >= created_from)
    if created_to is not None:
        conditions.append(JobRow.created_at <= created_to)
    return conditions


def _tuple_lt(left: tuple[Any, Any], right: tuple[Any, Any]) -> Any:
    """(a1, b1) < (a2, b2), spelled out so SQLite and PostgreSQL read it the same."""
    return or_(left[0] < right[0], and_(left[0] == right[0], left[1] < right[1]))
