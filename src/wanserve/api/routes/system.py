"""Models, health, readiness and metrics."""

from __future__ import annotations

import errno
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wanserve.api.auth import bearer_matches, require_admin
from wanserve.api.schemas import ErrorBody, ModelList, ModelObject, WorkerList, WorkerObject
from wanserve.api.services import Owner, Services, Svc
from wanserve.errors import StoreUnavailable, Unauthorized, Unavailable
from wanserve.jobs.fleet import unserved

router = APIRouter()
STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelList, tags=["models"])
def list_models(svc: Svc, _owner: Owner) -> ModelList:
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
    """Readiness: database, storage (and broker, if set) reachable (503 naming what is not).

    Also, per served model: live workers, how many have its engine loaded, and its queue;
    `warnings` names each model no live worker serves. Those do not make the API unready:
    it still takes jobs, which wait for a worker (or overflow, or time out).
    """
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
    models = _models(svc) if checks["database"] == "ok" else None
    if models is None and checks["database"] == "ok":
        checks["database"] = "error: unreachable"  # it went away between the two reads
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, object] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if models is not None:
        body.update(models)
    return JSONResponse(body, 200 if ready else 503)


def _models(svc: Services) -> dict[str, object] | None:
    """Per served model: live workers, loaded engines, queue; and the unserved models."""
    try:
        report = svc.fleet.service(svc.registry.routes, svc.settings.job_lease)
    except StoreUnavailable:
        return None
    return {
        "models": {
            model: {
                "workers": service.workers,
                "loaded": service.loaded,
                "loading": service.loading,
                "failed": service.failed,
                "queued": service.queued,
                "oldest_wait_seconds": service.oldest_wait,
            }
            for model, service in sorted(report.items())
        },
        "warnings": unserved(report),
    }


@router.get(
    "/v1/workers",
    response_model=WorkerList,
    tags=["health"],
    responses={401: {"model": ErrorBody, "description": "Missing or wrong admin key"}},
)
def list_workers(request: Request, svc: Svc) -> WorkerList:
    """The live workers: models served, device, engines loaded, current job (admin key)."""
    require_admin(request, svc.settings.admin_key)
    return WorkerList(
        data=[
            WorkerObject(
                id=worker.id,
                host=worker.host,
                pid=worker.pid,
                models=worker.models,
                device=worker.device,
                engines=worker.engines,
                current_job=worker.current_job,
                started_at=int(worker.started_at),
                last_heartbeat_at=worker.heartbeat_at,
            )
            for worker in svc.fleet.live(svc.settings.job_lease)
        ]
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
    if key and not bearer_matches(request, key):
        raise Unauthorized("This endpoint needs the metrics key.")
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
