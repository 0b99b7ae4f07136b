"""The change feed: a watcher wakes on a change made through another engine (another
process's connection), by LISTEN/NOTIFY on PostgreSQL and by the poll on SQLite."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import create_engine
from test_job_store import make_job

from wanserve.jobs.store import JobStore
from wanserve.jobs.watch import ChangeFeed


def test_a_change_from_another_connection_wakes_the_watcher(store: JobStore):
    job = store.create(make_job())
    listens = store.engine.dialect.name == "postgresql"
    # On PostgreSQL the poll is made too slow to matter: only the NOTIFY can wake it.
    feed = ChangeFeed(store, poll_interval=100.0 if listens else 0.05)
    other = JobStore(create_engine(store.engine.url), clock=store.clock)

    async def scenario() -> tuple[bool, bool, float]:
        async with feed.watch(job.id, known=0) as watcher:
            # The listener, once connected, wakes everyone once (whatever it missed).
            await watcher.wait(1.0 if listens else 0)
            quiet = await watcher.wait(0.3)  # nothing changed since
            started = time.monotonic()
            await asyncio.to_thread(other.claim_job, job.id, "w1")
            woke = await watcher.wait(10)
            elapsed = time.monotonic() - started
        await feed.stop()
        return quiet, woke, elapsed

    try:
        quiet, woke, elapsed = asyncio.run(scenario())
    finally:
        other.engine.dispose()
    assert not quiet and woke and elapsed < 5
    assert feed.open_streams == 0
