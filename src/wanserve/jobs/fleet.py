"""The live worker registry: every worker process reports itself; the API reads the fleet.

A worker writes its row when it starts and again on every beat, and deletes it when it
stops; a row whose beats stopped for longer than the job lease belongs to a dead process
and is neither listed nor kept. What a worker is running is read from the jobs it holds,
so it is never stale.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from wanserve.jobs.db import JobRow, WorkerRow
from wanserve.jobs.model import JobStatus
from wanserve.jobs.sql import JobRows


@dataclass(frozen=True)
class WorkerInfo:
    """One worker process as it last reported itself."""

    id: str
    host: str
    pid: int
    models: list[str]
    device: str
    engines: dict[str, str]  # model -> not_loaded | loading | loaded | failed
    started_at: float
    heartbeat_at: float = 0.0
    current_job: str | None = None


@dataclass(frozen=True)
class ModelService:
    """How one served model is covered by live workers, and how long its queue waits."""

    workers: int = 0
    loaded: int = 0  # live workers whose engine for it is loaded
    loading: int = 0  # ... still loading it (a warm start under way)
    failed: int = 0  # ... that failed to load it (its jobs there fail)
    queued: int = 0
    oldest_wait: float | None = None  # seconds the oldest queued job has waited


def describe_device(engines: Iterable[object]) -> str:
    """Where this process computes: the loaded engines' device, and any GPU pinning."""
    devices = sorted({str(d) for e in engines if (d := getattr(e, "device", None)) is not None})
    device = ",".join(devices) or "cpu"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return f"{device} (CUDA_VISIBLE_DEVICES={visible})" if visible else device


class Fleet(JobRows):
    """The `workers` table: report, leave, list the live ones, drop the dead.

    Its sessions are the job store's, so a database outage is `StoreUnavailable` here too.
    """

    def report(self, info: WorkerInfo) -> None:
        """Write this worker's row now (insert on the first beat, update afterwards)."""
        values = {
            "host": info.host,
            "pid": info.pid,
            "models": list(info.models),
            "device": info.device,
            "engines": dict(info.engines),
            "started_at": info.started_at,
            "heartbeat_at": self.clock(),
        }
        with self._write() as session:
            # Only this worker writes its row, so update-then-insert cannot race.
            updated = session.execute(
                update(WorkerRow).where(WorkerRow.id == info.id).values(**values)
            )
            if updated.rowcount == 0:  # type: ignore[attr-defined]
                session.add(WorkerRow(id=info.id, **values))

    def leave(self, worker_id: str) -> None:
        """Remove a stopping worker's row."""
        with self._write() as session:
            session.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))

    def drop_dead(self, ttl: float) -> int:
        """Delete rows not refreshed for `ttl` seconds (their process died); how many."""
        with self._write() as session:
            result = session.execute(
                delete(WorkerRow).where(WorkerRow.heartbeat_at < self.clock() - ttl)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    def live(self, ttl: float) -> list[WorkerInfo]:
        """Workers that beat within `ttl` seconds, with the job each is running."""
        with self._read() as session:
            rows = session.scalars(
                select(WorkerRow)
                .where(WorkerRow.heartbeat_at >= self.clock() - ttl)
                .order_by(WorkerRow.started_at, WorkerRow.id)
            ).all()
            running = self._running(session, [row.id for row in rows])
        return [
            WorkerInfo(
                id=row.id,
                host=row.host,
                pid=row.pid,
                models=list(row.models),
                device=row.device,
                engines=dict(row.engines),
                started_at=row.started_at,
                heartbeat_at=row.heartbeat_at,
                current_job=running.get(row.id),
            )
            for row in rows
        ]

    @staticmethod
    def _running(session: Session, worker_ids: list[str]) -> dict[str, str]:
        if not worker_ids:
            return {}
        pairs = session.execute(
            select(JobRow.worker_id, JobRow.id).where(
                JobRow.status == JobStatus.IN_PROGRESS.value, JobRow.worker_id.in_(worker_ids)
            )
        ).all()
        return {str(worker_id): job_id for worker_id, job_id in pairs}

    def service(self, models: Iterable[str], ttl: float) -> dict[str, ModelService]:
        """For each model: its live workers (and how many have it loaded) and its queue."""
        workers = self.live(ttl)
        now = self.clock()
        with self._read() as session:
            queues = {
                route: (int(count), oldest)
                for route, count, oldest in session.execute(
                    select(JobRow.route, func.count(), func.min(JobRow.created_at))
                    .where(JobRow.status == JobStatus.QUEUED.value)
                    .group_by(JobRow.route)
                ).all()
            }
        report: dict[str, ModelService] = {}
        for model in models:
            serving = [w for w in workers if model in w.models]
            queued, oldest = queues.get(model, (0, None))
            report[model] = ModelService(
                workers=len(serving),
                loaded=sum(1 for w in serving if w.engines.get(model) == "loaded"),
                loading=sum(1 for w in serving if w.engines.get(model) == "loading"),
                failed=sum(1 for w in serving if w.engines.get(model) == "failed"),
                queued=queued,
                oldest_wait=round(max(0.0, now - oldest), 3) if oldest is not None else None,
            )
        return report


def unserved(report: Mapping[str, ModelService]) -> list[str]:
    """One line per model with no live worker, saying how long its oldest job has waited."""
    lines = []
    for model, service in sorted(report.items()):
        if service.workers:
            continue
        line = f"model {model} has no live worker"
        if service.oldest_wait is not None:
            line += f"; {service.queued} queued, the oldest for {service.oldest_wait:.0f} s"
        lines.append(line)
    return lines
