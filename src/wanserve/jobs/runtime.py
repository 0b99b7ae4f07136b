"""Building the job core's parts from settings (shared by the server, workers and CLI)."""

from __future__ import annotations

from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.db import make_engine
from wanserve.jobs.queue import open_queue
from wanserve.jobs.store import JobStore
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings
from wanserve.storage import open_storage


def open_store(settings: Settings, *, migrate: bool = True) -> JobStore:
    """The job store for the configured database (schema migrated unless told not to)."""
    url = settings.resolved_database_url
    return JobStore.open(url) if migrate else JobStore(make_engine(url))


def build_worker(settings: Settings, *, migrate: bool = True) -> Worker:
    """A worker wired to the configured database, storage and engines."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Worker(
        settings,
        open_store(settings, migrate=migrate),
        open_storage(settings.resolved_storage_url, settings),
        EngineRegistry(settings),
        queue=open_queue(settings),
    )
