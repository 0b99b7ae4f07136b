"""`create_app`: the FastAPI application, wired from settings or from parts a test passes."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI

from wanserve import __version__
from wanserve.api.auth import KeyCheck
from wanserve.api.conditional import ConditionalGet
from wanserve.api.errors import install_error_handlers
from wanserve.api.limits import BodyLimit
from wanserve.api.metrics import Metrics
from wanserve.api.openapi import install_openapi
from wanserve.api.quota import CreateQuota
from wanserve.api.requestid import RequestContext
from wanserve.api.routes import dashscope, events, playground, system, usage, videos
from wanserve.api.services import Services
from wanserve.api.signing import UrlSigner
from wanserve.api.timing import RequestTimer
from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.fleet import Fleet
from wanserve.jobs.intake import Intake
from wanserve.jobs.pool import WorkerPool
from wanserve.jobs.queue import JobQueue, open_queue
from wanserve.jobs.runtime import open_store
from wanserve.jobs.store import JobStore
from wanserve.jobs.watch import ChangeFeed
from wanserve.logs import configure_logging
from wanserve.media.fetch import MediaFetcher
from wanserve.settings import Settings
from wanserve.storage import open_storage
from wanserve.storage.base import Storage

logger = logging.getLogger(__name__)

# The settings of the `serve --api-workers` processes, as JSON: uvicorn starts each from an
# import string, so the parent hands them over in the environment its children inherit.
API_SETTINGS_ENV = "WANSERVE_API_PROCESS_SETTINGS"


def _announce(settings: Settings, registry: EngineRegistry, keys: KeyCheck) -> None:
    for name, route in sorted(registry.routes.items()):
        logger.info("model %s -> engine %s", name, route.engine)
    if not settings.models and settings.engine == "keyframe":
        logger.info("no engine configured: wan2.7-i2v uses the embedded CPU keyframe engine")
    if keys.open:
        logger.warning("no WANSERVE_API_KEYS set: the API is open to anyone who can reach it")


def create_app(
    settings: Settings | None = None,
    *,
    store: JobStore | None = None,
    storage: Storage | None = None,
    fetcher: MediaFetcher | None = None,
    registry: EngineRegistry | None = None,
    workers: int | None = None,
    queue: JobQueue | None = None,
) -> FastAPI:
    """The app; `workers` processes (default `settings.workers`) run jobs while it serves."""
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = store or open_store(settings)
    storage = storage or open_storage(settings.resolved_storage_url, settings)
    registry = registry or EngineRegistry(settings)
    fetcher = fetcher or MediaFetcher.from_settings(settings)
    queue = queue or open_queue(settings)
    keys = KeyCheck(settings.api_keys)
    fleet = Fleet(store.engine, clock=store.clock)
    feed = ChangeFeed(store, poll_interval=settings.poll_interval)
    worker_count = settings.workers if workers is None else workers

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _announce(settings, registry, keys)
        pool = WorkerPool(settings, worker_count) if worker_count else None
        if pool:
            pool.start()
        app.state.worker_pool = pool
        try:
            yield
        finally:
            await feed.stop()
            if pool:
                pool.stop(settings.shutdown_timeout)
            queue.close()

    app = FastAPI(
        title="wanserve",
        version=__version__,
        description="First frame + last frame (+ driving audio) to video, "
        "behind OpenAI- and DashScope-compatible asynchronous video APIs.",
        lifespan=lifespan,
    )
    metrics = Metrics(store, fleet, registry, settings.job_lease, feed=feed)
    app.state.services = Services(
        settings=settings,
        store=store,
        storage=storage,
        registry=registry,
        intake=Intake(settings, store, storage, registry, fetcher, queue, observer=metrics),
        keys=keys,
        signer=UrlSigner.from_settings(settings),
        metrics=metrics,
        fleet=fleet,
        feed=feed,
    )
    app.state.stream_slots = events.StreamSlots(settings.max_streams_per_key)
    app.state.create_quota = CreateQuota.from_settings(settings, store)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(videos.router)
    app.include_router(events.router)
    app.include_router(usage.router)
    app.include_router(system.router)
    app.include_router(dashscope.router)
    app.include_router(playground.router)
    app.mount("/static", playground.static_files(), name="static")

    # Plain ASGI middleware only (see `RequestTimer`); the last added runs first.
    app.add_middleware(ConditionalGet, routes=videos.CONDITIONAL_ROUTES)
    app.add_middleware(RequestTimer, histogram=app.state.services.metrics.requests)
    app.add_middleware(
        BodyLimit,
        json_limit=settings.max_json_body,
        multipart_limit=settings.max_multipart_body,
        read_timeout=settings.body_read_timeout,
    )
    # Outermost: every line a request logs (even a refused body's) carries its id.
    app.add_middleware(RequestContext)
    return app


def api_process_app() -> FastAPI:
    """The app of one `serve --api-workers` process (uvicorn's factory): the parent's
    settings, and no job workers (the parent runs those once, for all of them)."""
    configure_logging()
    app = create_app(Settings.model_validate_json(os.environ[API_SETTINGS_ENV]), workers=0)
    _end_streams_on_exit(app)
    return app


def _end_streams_on_exit(app: FastAPI) -> None:
    # uvicorn waits for open responses before it shuts down, and event streams never end
    # by themselves: they are ended first (`serve` does the same for its one process).
    # The factory runs inside uvicorn's signal capture, so its handlers are the ones wrapped.
    feed = app.state.services.feed
    for number in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(number)
        if callable(handler):

            def end_streams_then(sig: int, frame: FrameType | None, then: Any = handler) -> None:
                feed.close()
                then(sig, frame)

            signal.signal(number, end_streams_then)
