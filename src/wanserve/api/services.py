"""The parts one app wires together, built from settings or passed in by tests."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, ParamSpec, TypeVar

from anyio import to_thread
from fastapi import Depends, Request

from wanserve.api.auth import KeyCheck
from wanserve.api.metrics import Metrics
from wanserve.api.signing import UrlSigner
from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.fleet import Fleet
from wanserve.jobs.intake import Intake
from wanserve.jobs.store import JobStore
from wanserve.jobs.watch import ChangeFeed
from wanserve.settings import Settings
from wanserve.storage.base import Storage

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Services:
    """Everything a route needs; one instance per app, kept on `app.state`."""

    settings: Settings
    store: JobStore
    storage: Storage
    registry: EngineRegistry
    intake: Intake
    keys: KeyCheck
    signer: UrlSigner | None
    metrics: Metrics
    fleet: Fleet
    feed: ChangeFeed  # wakes the event streams when their job changes


def services(request: Request) -> Services:
    """FastAPI dependency: the app's services."""
    services: Services = request.app.state.services
    return services


def caller(request: Request) -> str:
    """FastAPI dependency: the owner id of the calling API key."""
    return services(request).keys(request)


# FastAPI runs a plain `def` dependency in its thread pool: these two are `async def` so
# that resolving them costs no thread hop (their work is a dict lookup and a hash).
async def _services_dependency(request: Request) -> Services:
    return services(request)


async def _caller_dependency(request: Request) -> str:
    return caller(request)


Svc = Annotated[Services, Depends(_services_dependency)]
Owner = Annotated[str, Depends(_caller_dependency)]


async def store_read(svc: Services, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a store read from an `async def` route: inline where the store's reads are
    local (SQLite), else in the thread pool (a server's reads may wait on the network)."""
    if svc.store.reads_inline:
        return read(*args, **kwargs)
    return await to_thread.run_sync(functools.partial(read, *args, **kwargs))
