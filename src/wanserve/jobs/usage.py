"""Seconds of video made, per key, model, size and UTC day.

A completed job's usage row is written in the transaction that completes it (see
`jobs.sql`), keyed by the job, so it is counted once and outlives the job's deletion.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from wanserve.jobs.db import UsageRow
from wanserve.jobs.sql import outage_as_unavailable


@dataclass(frozen=True)
class UsageBucket:
    """One key's videos of one model and size on one day."""

    owner: str
    model: str
    size: str
    day: str
    seconds: float
    videos: int


def usage(
    engine: Engine,
    *,
    owner: str | None = None,
    start_day: str | None = None,
    end_day: str | None = None,
) -> list[UsageBucket]:
    """The buckets of `owner` (everyone's when None) from `start_day` to `end_day` inclusive."""
    query = select(
        UsageRow.owner,
        UsageRow.model,
        UsageRow.size,
        UsageRow.day,
        func.sum(UsageRow.seconds),
        func.count(),
    ).group_by(UsageRow.owner, UsageRow.model, UsageRow.size, UsageRow.day)
    if owner is not None:
        query = query.where(UsageRow.owner == owner)
    if start_day is not None:
        query = query.where(UsageRow.day >= start_day)
    if end_day is not None:
        query = query.where(UsageRow.day <= end_day)
    query = query.order_by(UsageRow.day, UsageRow.owner, UsageRow.model, UsageRow.size)
    with outage_as_unavailable(), engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        UsageBucket(owner, model, size, day, float(seconds or 0.0), int(videos))
        for owner, model, size, day, seconds, videos in rows
    ]
