"""Telling waiters in this process that a job changed, whichever process changed it.

Every status and progress change counts the job's `version` up (see `jobs.sql`). A
`ChangeFeed` polls the versions of the jobs being watched, in one query for all of them;
on PostgreSQL it also LISTENs on the channel each change NOTIFYs at commit, so a worker on
another machine is heard at once and the poll is only a slow safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from anyio import to_thread

from wanserve.errors import StoreUnavailable
from wanserve.jobs.sql import CHANGES_CHANNEL
from wanserve.jobs.store import JobStore

logger = logging.getLogger(__name__)

# With LISTEN/NOTIFY the poll only catches what a lost connection missed.
NOTIFIED_POLL_FACTOR = 10


@dataclass(eq=False)
class Watcher:
    """One waiter on one job: `known` is the version it has seen."""

    job_id: str
    known: int
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, timeout: float) -> bool:
        """Wait for a change (True), or `timeout` / closing (False); clears the flag."""
        changed = asyncio.ensure_future(self.changed.wait())
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({changed, closing}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            changed.cancel()
            closing.cancel()
        was_changed = self.changed.is_set()
        self.changed.clear()
        return was_changed


class ChangeFeed:
    """Wakes this process's watchers when their job's version moves past what they know."""

    def __init__(self, store: JobStore, *, poll_interval: float = 0.5):
        self.store = store
        self._listens = store.engine.dialect.name == "postgresql"
        self.poll_interval = poll_interval * (NOTIFIED_POLL_FACTOR if self._listens else 1)
        self._watchers: dict[str, set[Watcher]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._stopped = threading.Event()
        self._listener: threading.Thread | None = None
        self.closed = False

    @property
    def open_streams(self) -> int:
        """How many watchers there are (the open event streams)."""
        return sum(len(watchers) for watchers in self._watchers.values())

    @asynccontextmanager
    async def watch(self, job_id: str, known: int) -> AsyncIterator[Watcher]:
        """A watcher on `job_id` for the block; its `closing` is set when the feed closes."""
        self._start()
        watcher = Watcher(job_id, known)
        if self.closed:
            watcher.closing.set()
        self._watchers.setdefault(job_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            watchers = self._watchers.get(job_id, set())
            watchers.discard(watcher)
            if not watchers:
                self._watchers.pop(job_id, None)

    def _start(self) -> None:
        if self._poller is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._poller = self._loop.create_task(self._poll())
        if self._listens:
            self._listener = threading.Thread(target=self._listen, name="job-changes", daemon=True)
            self._listener.start()

    def close(self) -> None:
        """End every watch (shutdown); safe to call from any thread or a signal handler."""
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop stopped meanwhile
                self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.closing.set()

    async def stop(self) -> None:
        """Close, and stop polling and listening."""
        self.close()
        self._close_all()
        self._stopped.set()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._listener is not None:
            await to_thread.run_sync(self._listener.join, 5.0)

    def _poke(self, job_id: str) -> None:
        for watcher in self._watchers.get(job_id, ()):
            watcher.changed.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self._watchers:
                continue
            try:
                versions = await to_thread.run_sync(self.store.versions, list(self._watchers))
            except StoreUnavailable:
                continue  # the streams notice on their own read
            for job_id, watchers in list(self._watchers.items()):
                version = versions.get(job_id)
                for watcher in list(watchers):
                    if version is None or version > watcher.known:
                        watcher.changed.set()

    def _listen(self) -> None:
        """LISTEN for NOTIFYs on a connection of its own; reconnects after a failure."""
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stopped.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._from_thread(self._poke_all)  # whatever changed while we were away
                    while not self._stopped.is_set():
                        for note in connection.notifies(timeout=1.0):
                            self._from_thread(self._poke, note.payload)
            except psycopg.Error as exc:
                logger.warning("job change listener: %s; polling until it reconnects", exc)
                self._stopped.wait(2.0)

    def _poke_all(self) -> None:
        for job_id in list(self._watchers):
            self._poke(job_id)

    def _from_thread(self, call: object, *args: str) -> None:
        assert self._loop is not None and callable(call)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(call, *args)
