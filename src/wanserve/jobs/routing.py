"""Which queued job runs next, and where: the fair pick of a claim, overflow, time-outs.

A job waits in the queue of its route (the served model whose workers run it). Among the
queued jobs of the routes a worker serves, the next claim takes the oldest job of the key
with the fewest running jobs on that route; between keys running as many, the one served
least recently goes first, so one key's burst cannot starve the others even with a
single worker. The pick is only a read: the claim itself stays the store's one
compare-and-set, so a stale pick under concurrent claimers loses and picks again.

Deadlines: a model's `overflow` moves a job nobody started within `max_wait` to another
model's queue, and `queue_timeout` fails one nobody started at all (`QueueDeadlines`
holds the store's writes for both; any worker applies them, see `apply_deadlines`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, and_, func, literal, select, union_all, update
from sqlalchemy.orm import aliased

from wanserve.jobs.db import JobRow
from wanserve.jobs.model import ErrorCode, JobStatus
from wanserve.jobs.sql import JobRows

if TYPE_CHECKING:
    from wanserve.engines.registry import ModelRoute
    from wanserve.jobs.store import JobStore

logger = logging.getLogger(__name__)

QUEUED = JobStatus.QUEUED.value
RUNNING = JobStatus.IN_PROGRESS.value


def _keys_waiting(route: str, index: int) -> Select[Any]:
    """(route, owner) of every key with jobs queued on `route`, one index seek per key.

    A loose index scan (a recursive query stepping from one owner to the next one in
    `ix_jobs_route_owner`): its cost grows with the number of keys waiting, not with the
    number of jobs, where a GROUP BY would read every queued row on every claim.
    """
    first, after = aliased(JobRow), aliased(JobRow)
    start = (
        select(first.owner)
        .where(first.status == QUEUED, first.route == route)
        .order_by(first.owner)
        .limit(1)
        .scalar_subquery()
    )
    keys = select(start.label("owner")).cte(f"keys_{index}", recursive=True)
    following = (
        select(after.owner)
        .where(after.status == QUEUED, after.route == route, after.owner > keys.c.owner)
        .order_by(after.owner)
        .limit(1)
        .scalar_subquery()
    )
    keys = keys.union_all(select(following.label("owner")).where(keys.c.owner.is_not(None)))
    return select(literal(route).label("route"), keys.c.owner).where(keys.c.owner.is_not(None))


def next_claim(routes: Sequence[str]) -> Select[Any]:
    """The id of the job a worker serving `routes` should claim next (no row: none queued)."""
    return _next_claim(tuple(routes))


@functools.lru_cache(maxsize=64)
def _next_claim(routes: tuple[str, ...]) -> Select[Any]:
    # Built once per set of routes: putting the statement together costs more than
    # running it, and a worker claims with the same routes all its life.
    waiting = [_keys_waiting(route, index) for index, route in enumerate(routes)]
    heads = (waiting[0] if len(waiting) == 1 else union_all(*waiting)).subquery("heads")
    running_job, started_job, head_job = aliased(JobRow), aliased(JobRow), aliased(JobRow)

    def same_key(row: Any) -> Any:
        return and_(row.owner == heads.c.owner, row.route == heads.c.route)

    running = (
        select(func.count())
        .select_from(running_job)
        .where(running_job.status == RUNNING, same_key(running_job))
        .scalar_subquery()
    )
    last_start = (
        select(func.coalesce(func.max(started_job.started_at), 0.0))
        .where(same_key(started_job), started_job.started_at.is_not(None))
        .scalar_subquery()
    )

    def head(column: Any) -> Any:
        # The key's oldest queued job: the first entry of its part of the index.
        return (
            select(column)
            .where(head_job.status == QUEUED, same_key(head_job))
            .order_by(head_job.created_at, head_job.id)
            .limit(1)
            .scalar_subquery()
        )

    return (
        select(head(head_job.id))
        .select_from(heads)
        .order_by(running, last_start, head(head_job.created_at), heads.c.owner)
        .limit(1)
    )


class QueueDeadlines(JobRows):
    """The job store's writes for overflow and queue time-outs (compare-and-set, each)."""

    def unclaimed(
        self, route: str, before: float, *, unmoved: bool = False, limit: int = 100
    ) -> list[str]:
        """Queued jobs of `route` made before `before` that no worker ever started.

        `unmoved`: only those still on their own model's route (a job overflows once).
        """
        query = select(JobRow.id).where(
            JobRow.status == JobStatus.QUEUED.value,
            JobRow.route == route,
            JobRow.created_at < before,
            JobRow.started_at.is_(None),
        )
        if unmoved:
            query = query.where(JobRow.model == route)
        with self._connect() as connection:
            return list(
                connection.execute(query.order_by(JobRow.created_at).limit(limit)).scalars()
            )

    def move_route(self, job_id: str, source: str, target: str, engine: str) -> bool:
        """Move a never-started queued job from `source`'s queue to `target`'s (overflow).

        The job keeps its id; its engine becomes `engine` and its metadata records the
        move. False when it was claimed, cancelled or moved meanwhile.
        """
        with self._write() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                return False
            note = {
                "from": source,
                "to": target,
                "from_engine": row.engine,
                "waited_seconds": round(self.clock() - row.created_at, 3),
            }
            result = session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.status == JobStatus.QUEUED.value,
                    JobRow.route == source,
                    JobRow.started_at.is_(None),
                )
                .values(route=target, engine=engine, meta={**(row.meta or {}), "overflow": note})
            )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def time_out_unclaimed(self, job_id: str, route: str, before: float, limit: float) -> bool:
        """Fail a job of `route` that no worker started since before `before` (`timeout`)."""
        return self._apply(
            job_id,
            JobStatus.QUEUED,
            JobStatus.FAILED,
            JobRow.route == route,
            JobRow.started_at.is_(None),
            JobRow.created_at < before,
            error_code=ErrorCode.TIMEOUT.value,
            error_message=f"No worker for this model took the job within {limit:g} seconds.",
            completed_at=self.clock(),
        )


def apply_deadlines(
    store: JobStore,
    routes: Mapping[str, ModelRoute],
    publish: Callable[[str, str], None],
) -> tuple[list[str], list[str]]:
    """Move overdue jobs to their overflow model, fail those past `queue_timeout`.

    Only jobs that no worker ever started qualify, and a job moves at most once; both
    changes are compare-and-set updates on a queued job, so a claim racing a move or a
    time-out has one winner and the job runs once. Returns (moved ids, timed-out ids).
    """
    now = store.clock()
    moved: list[str] = []
    timed_out: list[str] = []
    for route in routes.values():
        if route.overflow is not None:
            target = routes[route.overflow]
            for job_id in store.unclaimed(route.name, now - route.max_wait, unmoved=True):
                if store.move_route(job_id, route.name, target.name, target.engine):
                    logger.warning(
                        "job %s: unclaimed for %gs on %s; moved to %s",
                        job_id,
                        route.max_wait,
                        route.name,
                        target.name,
                    )
                    publish(job_id, target.name)
                    moved.append(job_id)
        if route.queue_timeout is not None:
            cutoff = now - route.queue_timeout
            for job_id in store.unclaimed(route.name, cutoff):
                if store.time_out_unclaimed(job_id, route.name, cutoff, route.queue_timeout):
                    logger.warning("job %s: no worker took it on %s; timed out", job_id, route.name)
                    timed_out.append(job_id)
    return moved, timed_out
