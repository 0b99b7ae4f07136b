"""The job store: every read and state change of a job goes through here.

State changes are compare-and-set updates (`... WHERE id = :id AND status = :seen`), so
two processes racing on one job cannot both win: that is what makes a claim atomic on
SQLite and PostgreSQL alike, without locks held across the work. A create is decided in
one transaction that holds a per-owner lock (its idempotency key and its admission).

Every passing database failure (a dropped connection, a restart, a full disk) leaves as
`StoreUnavailable` (see `jobs.sql`): callers tell it from their own failures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select
from sqlalchemy.orm import Session

from wanserve.errors import Conflict, InvalidRequest, TooManyUnfinished
from wanserve.jobs.db import IdempotencyRow, JobRow, job_from_row, new_job_row
from wanserve.jobs.model import Job, JobStatus
from wanserve.jobs.routing import QueueDeadlines, next_claim

IDEMPOTENCY_WINDOW = 24 * 3600
UNFINISHED = (JobStatus.QUEUED, JobStatus.IN_PROGRESS)
# Aliases: inside JobStore, `list` names the method.
Jobs = list[Job]
JobIds = list[str]
Statuses = list[JobStatus]

JOBS = JobRow.__table__
# Core statements on the table, not ORM loads: a poll reads one row and needs no
# identity map, and a statement built once skips the cost of putting it together.
JOB_BY_ID = select(JOBS).where(JOBS.c.id == bindparam("job_id"))


class JobStore(QueueDeadlines):
    """Jobs in a SQL database (SQLite by default, PostgreSQL for several machines)."""

    # -- creating and reading ------------------------------------------------------

    def create(
        self,
        job: Job,
        *,
        idempotency: tuple[str, str] | None = None,
        max_unfinished: int = 0,
    ) -> Job:
        """Insert a new queued job, or with `(key, request_hash)` return the key's earlier job.

        One transaction under a per-owner lock decides it all, so concurrent creates of one
        owner see each other: the first with a key makes the job and the rest get it, and
        `max_unfinished` (0: no cap) is never exceeded. Raises `InvalidRequest`
        (`idempotency_key_reused`) for a key used with another body within the window,
        `TooManyUnfinished` when the owner is at the cap.
        """
        now = self.clock()
        with self._write() as session:
            self._lock_owner(session, job.owner)
            if idempotency is not None:
                earlier = self._idempotent_job(session, job.owner, *idempotency, now=now)
                if earlier is not None:
                    return earlier
            if max_unfinished and self._unfinished(session, job.owner) >= max_unfinished:
                raise TooManyUnfinished(max_unfinished)
            session.add(new_job_row(job))
            if idempotency is not None:
                key, request_hash = idempotency
                # Replaces a record that is past the window or whose job was deleted.
                session.merge(
                    IdempotencyRow(
                        owner=job.owner,
                        key=key,
                        job_id=job.id,
                        request_hash=request_hash,
                        created_at=now,
                    )
                )
        return job

    def _lock_owner(self, session: Session, owner: str) -> None:
        """Serialise this transaction with the owner's other creates until it ends."""
        if self.engine.dialect.name == "postgresql":
            digest = hashlib.blake2b(owner.encode(), digest_size=8, person=b"wanserve-owner")
            key = int.from_bytes(digest.digest(), "big", signed=True)
            session.execute(select(func.pg_advisory_xact_lock(key)))
        # SQLite: the write transaction began IMMEDIATE and holds the database's write lock.

    @staticmethod
    def _unfinished(session: Session, owner: str) -> int:
        query = (
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.owner == owner, JobRow.status.in_([s.value for s in UNFINISHED]))
        )
        return int(session.execute(query).scalar_one())

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
                return job_from_row(earlier)
        return None

    def find_idempotent(self, owner: str, key: str, request_hash: str) -> Job | None:
        """The job an unexpired `key` made, or None; raises if the body differs."""
        with self._read() as session:
            return self._idempotent_job(session, owner, key, request_hash, now=self.clock())

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """The job, or None; with `owner`, other owners' jobs are None too."""
        with self._connect_single() as connection:
            row = connection.execute(JOB_BY_ID, {"job_id": job_id}).first()
        if row is None or (owner is not None and row.owner != owner):
            return None
        return job_from_row(row)

    def status_of(self, job_id: str) -> JobStatus | None:
        """Just the status (None once deleted); cheap enough for frequent cancel checks."""
        with self._connect() as connection:
            value = connection.execute(
                select(JobRow.status).where(JobRow.id == job_id)
            ).scalar_one_or_none()
        return JobStatus(value) if value is not None else None

    def versions(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The change counters of these jobs (missing ones are deleted), in one query."""
        with self._connect() as connection:
            rows = connection.execute(
                select(JobRow.id, JobRow.version).where(JobRow.id.in_(list(job_ids)))
            ).all()
        return {job_id: int(version) for job_id, version in rows}

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
        with self._connect() as connection:
            query = select(JOBS).where(JobRow.owner == owner)
            newest_first = order == "desc"
            if after is not None:
                anchor = connection.execute(JOB_BY_ID, {"job_id": after}).first()
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
            rows = connection.execute(query.offset(offset).limit(limit + 1)).all()
        return [job_from_row(r) for r in rows[:limit]], len(rows) > limit

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
        with self._connect() as connection:
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
        return self.count(owner, statuses=list(UNFINISHED))

    def count_by_status(self) -> dict[str, int]:
        """How many jobs of all owners are in each state (for metrics)."""
        with self._connect() as connection:
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
        `worker_id` makes the move only if that worker still holds the job (and a move that
        worker already made counts as made, so a retry after a lost answer succeeds).
        Raises `IllegalTransition` for a move the table forbids and `Conflict` when the job
        changed under us (or is gone).
        """
        guard = [JobRow.worker_id == worker_id] if worker_id is not None else []
        for _ in range(5):
            current = expect or self.status_of(job_id)
            if current is None:
                raise Conflict("the job no longer exists", code="not_found")
            if self._apply(job_id, current, target, *guard, **fields) or (
                worker_id is not None and self._holds(job_id, worker_id, target)
            ):
                job = self.get(job_id)
                assert job is not None
                return job
            if expect is not None:
                break
        raise Conflict(f"job {job_id} changed state concurrently", code="invalid_state")

    def claim(self, worker_id: str, routes: Sequence[str]) -> Job | None:
        """Take the next queued job of `routes` for `worker_id`, fairly.

        Fair: the oldest job of the key with the fewest running jobs on that route (see
        `routing.next_claim`); None when nothing of `routes` is queued.
        """
        while True:
            with self._connect() as connection:
                job_id = connection.execute(next_claim(routes)).scalar_one_or_none()
            if job_id is None:
                return None
            job = self.claim_job(job_id, worker_id, routes)
            if job is not None:
                return job
            # Another worker took it between our read and our update: look again.

    def claim_job(
        self, job_id: str, worker_id: str, routes: Sequence[str] | None = None
    ) -> Job | None:
        """Take this one job for `worker_id` if it is still queued on one of `routes`."""
        now = self.clock()
        guard = [JobRow.route.in_(list(routes))] if routes is not None else []
        won = self._apply(
            job_id,
            JobStatus.QUEUED,
            JobStatus.IN_PROGRESS,
            *guard,
            worker_id=worker_id,
            started_at=now,
            heartbeat_at=now,
            attempts=JobRow.attempts + 1,
        )
        # A claim whose answer was lost is not recovered here (a duplicate message must
        # never run a job twice): its lease runs out and the job is queued again.
        return self.get(job_id) if won else None

    def queued_before(
        self, cutoff: float, routes: Sequence[str] | None = None, limit: int = 1000
    ) -> JobIds:
        """Ids of jobs of `routes` queued since before `cutoff`, oldest first (to re-announce)."""
        query = select(JobRow.id).where(
            JobRow.status == JobStatus.QUEUED.value, JobRow.created_at < cutoff
        )
        if routes is not None:
            query = query.where(JobRow.route.in_(list(routes)))
        with self._connect() as connection:
            return list(
                connection.execute(
                    query.order_by(JobRow.created_at, JobRow.id).limit(limit)
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
            changed=job_id,
            progress=progress,
        )

    def save_engine_state(self, job_id: str, state: dict[str, Any]) -> None:
        """Persist what an engine needs to resume this job after a restart."""
        self._update(JobRow.id == job_id, engine_state=state)

    def requeue_stale(self, *, lease: float, max_attempts: int) -> tuple[JobIds, JobIds]:
        """Re-queue running jobs whose worker stopped heart-beating; fail those out of tries.

        Returns (requeued ids, failed ids).
        """
        cutoff = self.clock() - lease
        with self._connect() as connection:
            candidates = connection.execute(
                select(JobRow.id, JobRow.attempts).where(
                    JobRow.status == JobStatus.IN_PROGRESS.value, JobRow.heartbeat_at < cutoff
                )
            ).all()
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

    def release(self, job_id: str, worker_id: str, *, count_attempt: bool = False) -> bool:
        """Hand a running job back to the queue; False when it is no longer ours.

        A worker that is stopping does not count the attempt (the job did nothing wrong);
        one that failed for want of room does (`count_attempt`), so such a job runs out
        of attempts instead of going round for ever.
        """
        counted = {} if count_attempt else {"attempts": JobRow.attempts - 1}
        return self._apply(
            job_id,
            JobStatus.IN_PROGRESS,
            JobStatus.QUEUED,
            JobRow.worker_id == worker_id,
            worker_id=None,
            **counted,
        )

    def expired(self, now: float, limit: int = 100) -> Jobs:
        """Finished jobs whose files are past their expiry and not yet swept."""
        with self._read() as session:
            rows = session.scalars(
                select(JobRow)
                .where(
                    JobRow.expires_at.is_not(None),
                    JobRow.expires_at <= now,
                    JobRow.files_deleted_at.is_(None),
                )
                .limit(limit)
            ).all()
            return [job_from_row(r) for r in rows]

    def mark_swept(self, job_id: str) -> None:
        """Forget an expired job's outputs; the record stays so clients learn it expired."""
        self._update(JobRow.id == job_id, result={}, files_deleted_at=self.clock())

    def delete(self, job_id: str) -> None:
        """Remove the record for good."""
        with self._write() as session:
            session.execute(delete(JobRow).where(JobRow.id == job_id))

    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these job ids have a record (to find stored files that lost theirs)."""
        wanted, found = sorted(set(job_ids)), set[str]()
        with self._connect() as connection:
            for start in range(0, len(wanted), 500):
                batch = wanted[start : start + 500]
                found.update(
                    connection.execute(select(JobRow.id).where(JobRow.id.in_(batch))).scalars()
                )
        return found


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
