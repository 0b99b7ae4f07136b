"""The parts one app wires together, built from settings or passed in by tests."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from wanserve.api.auth import KeyCheck
from wanserve.api.metrics import Metrics
from wanserve.api.signing import UrlSigner
from wanserve.engines.registry import EngineRegistry
from wanserve.jobs.fleet import Fleet
from wanserve.jobs.intake import Intake
from wanserve.jobs.store import JobStore
from wanserve.settings import Settings
from wanserve.storage.base import Storage


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


def services(request: Request) -> Services:
    """FastAPI dependency: the app's services."""
    services: Services = request.app.state.services
    return services


def caller(request: Request) -> str:
    """FastAPI dependency: the owner id of the calling API key."""
    return services(request).keys(request)
