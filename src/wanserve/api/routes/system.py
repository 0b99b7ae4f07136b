"""Models, health, readiness and metrics."""

from __future__ import annotations

import errno
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wanserve.api.schemas import ModelList, ModelObject
from wanserve.api.services import Services, caller, services
from wanserve.errors import Unauthorized, Unavailable

router = APIRouter()
Svc = Annotated[Services, Depends(services)]
STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelList, tags=["models"])
def list_models(svc: Svc, _owner: Annotated[str, Depends(caller)]) -> ModelList:
    """The served model names, in OpenAI's shape."""
    return ModelList(
        data=[
            ModelObject(id=name, created=STARTED, owned_by=f"wanserve:{route.engine}")
            for name, route in sorted(svc.registry.routes.items())
        ]
    )


@router.get("/healthz", tags=["health"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(svc: Svc) -> JSONResponse:
    """Readiness: database, storage (and broker, if set) reachable (503 naming what is not)."""
    checks: dict[str, str] = {}
    probes = [("database", svc.store.ping), ("storage", svc.storage.check)]
    if svc.settings.broker_url:
        probes.append(("queue", svc.intake.queue.check))
    for name, probe in probes:
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {_failure(exc)}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
    )


def _failure(exc: Exception) -> str:
    """A few words on why a probe failed, for operators: `disk full`, `unreachable`."""
    if isinstance(exc, Unavailable):
        return exc.reason
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk full"
    return type(exc).__name__


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics(request: Request, svc: Svc) -> Response:
    """Prometheus metrics (needs `WANSERVE_METRICS_KEY` as Bearer token when that is set)."""
    key = svc.settings.metrics_key
    if key and request.headers.get("authorization", "") != f"Bearer {key}":
        raise Unauthorized("This endpoint needs the metrics key.")
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
