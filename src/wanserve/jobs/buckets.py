"""Token buckets kept in the database, so that a rate is one limit for every API process."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from wanserve.jobs.db import RateBucketRow, writer
from wanserve.jobs.sql import JobRows, outage_as_unavailable


class SharedBucket:
    """Per-owner token buckets: `burst` tokens at most, refilled at `rate` per second.

    The same arithmetic as an in-process bucket, on a row per owner that each take reads
    and writes in one write transaction (SQLite's write lock, a row lock on PostgreSQL):
    two API processes taking at once are served one after the other.
    """

    def __init__(self, store: JobRows, rate: float, burst: int):
        self.store = store
        self.rate = rate
        self.capacity = float(max(burst, 1))

    def take(self, owner: str) -> float:
        """Take one token for `owner`: 0.0 when granted, else seconds until one is due."""
        now = self.store.clock()
        postgresql = self.store.engine.dialect.name == "postgresql"
        insert = postgresql_insert if postgresql else sqlite_insert
        with outage_as_unavailable(), writer(self.store.engine).begin() as connection:
            connection.execute(
                insert(RateBucketRow)
                .values(owner=owner, tokens=self.capacity, counted_at=now)
                .on_conflict_do_nothing(index_elements=["owner"])
            )
            tokens, then = connection.execute(
                select(RateBucketRow.tokens, RateBucketRow.counted_at)
                .where(RateBucketRow.owner == owner)
                .with_for_update()
            ).one()
            # A clock another process read a moment earlier must not add tokens backwards.
            tokens = min(self.capacity, tokens + max(now - then, 0.0) * self.rate)
            granted = tokens >= 1.0
            connection.execute(
                update(RateBucketRow)
                .where(RateBucketRow.owner == owner)
                .values(tokens=tokens - 1.0 if granted else tokens, counted_at=max(now, then))
            )
        return 0.0 if granted else (1.0 - tokens) / self.rate
