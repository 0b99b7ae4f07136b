"""Which engine serves which model name, building engines, and which are loaded."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from wanserve.engines.base import Engine
from wanserve.errors import ModelNotFound
from wanserve.settings import DEFAULT_MODEL, Settings, parse_duration

logger = logging.getLogger(__name__)

# Engine name -> module exposing `create_engine(settings, options)`. Imported lazily so the
# base install never imports torch or a provider SDK it does not use.
ENGINE_MODULES = {
    "keyframe": "wanserve.engines.keyframe",
    "diffusers": "wanserve.engines.diffusers",
    "dashscope": "wanserve.engines.dashscope",
    "openai-upstream": "wanserve.engines.openai_upstream",
}


# Options of a model that steer its queue rather than configure its engine.
ROUTING_OPTIONS = ("overflow", "max_wait", "queue_timeout")
DEFAULT_MAX_WAIT = 60.0


@dataclass(frozen=True)
class ModelRoute:
    """A served model name, the engine behind it, its options and how its queue overflows."""

    name: str
    engine: str
    options: Mapping[str, Any] = field(default_factory=dict)
    overflow: str | None = None  # the model that takes jobs left unclaimed for `max_wait`
    max_wait: float = DEFAULT_MAX_WAIT
    queue_timeout: float | None = None  # a job never claimed this long fails with `timeout`


def _route_from(name: str, spec: Any, default_engine: str) -> ModelRoute:
    if isinstance(spec, str):
        spec = {"engine": spec}
    options = {k: v for k, v in spec.items() if k != "engine" and k not in ROUTING_OPTIONS}
    timeout = spec.get("queue_timeout")
    route = ModelRoute(
        name,
        spec.get("engine", default_engine),
        options,
        overflow=spec.get("overflow"),
        max_wait=parse_duration(spec.get("max_wait", DEFAULT_MAX_WAIT)),
        queue_timeout=parse_duration(timeout) if timeout is not None else None,
    )
    if route.max_wait <= 0 or (route.queue_timeout is not None and route.queue_timeout <= 0):
        raise ValueError(f"model {name!r}: max_wait and queue_timeout must be positive")
    return route


def _routes_from(settings: Settings) -> dict[str, ModelRoute]:
    routes = {DEFAULT_MODEL: ModelRoute(DEFAULT_MODEL, settings.engine)}
    for name, spec in settings.models.items():
        routes[name] = _route_from(name, spec, settings.engine)
    for route in routes.values():
        if route.engine not in ENGINE_MODULES:
            known = ", ".join(sorted(ENGINE_MODULES))
            raise ValueError(f"model {route.name!r}: unknown engine {route.engine!r} ({known})")
        if route.overflow is not None and (
            route.overflow == route.name or route.overflow not in routes
        ):
            raise ValueError(
                f"model {route.name!r}: overflow {route.overflow!r} is not another served model"
            )
    return routes


LoadState = Literal["not_loaded", "loading", "loaded", "failed"]


@dataclass(frozen=True)
class EngineLoad:
    """Whether one model's engine is built in this process (for readiness reports)."""

    engine: str
    state: LoadState = "not_loaded"
    seconds: float | None = None  # how long the last load took
    error: str | None = None  # why the last load failed

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return asdict(self)


class EngineRegistry:
    """Model names to engines; each is built once per process, at warm-up or first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.routes = _routes_from(settings)
        self._engines: dict[str, Engine] = {}
        # Read by other threads (a heartbeat reporting readiness) while a load runs.
        self._lock = threading.Lock()
        self._loads = {name: EngineLoad(route.engine) for name, route in self.routes.items()}

    def route(self, model: str) -> ModelRoute:
        """The route for `model`; raises `ModelNotFound` for names not served here."""
        route = self.routes.get(model)
        if route is None:
            served = ", ".join(sorted(self.routes))
            raise ModelNotFound(
                f"The model '{model}' does not exist or is not served here (served: {served}).",
                param="model",
            )
        return route

    def engine_for(self, model: str) -> Engine:
        """The (cached) engine instance serving `model`, built now if it is not yet."""
        route = self.route(model)
        engine = self._engines.get(model)
        return engine if engine is not None else self._build(route)

    def _build(self, route: ModelRoute) -> Engine:
        self._set_load(route, "loading")
        logger.info("model %s: loading engine %s", route.name, route.engine)
        started = time.monotonic()
        try:
            module = importlib.import_module(ENGINE_MODULES[route.engine])
            engine: Engine = module.create_engine(self.settings, route.options)
        except Exception as exc:
            reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            self._set_load(route, "failed", time.monotonic() - started, reason)
            raise
        seconds = time.monotonic() - started
        self._engines[route.name] = engine
        self._set_load(route, "loaded", seconds)
        logger.info("model %s: engine %s loaded in %.1f s", route.name, route.engine, seconds)
        return engine

    def _set_load(
        self,
        route: ModelRoute,
        state: LoadState,
        seconds: float | None = None,
        error: str | None = None,
    ) -> None:
        with self._lock:
            self._loads[route.name] = EngineLoad(route.engine, state, seconds, error)

    def preloaded_models(self) -> list[str]:
        """The models a worker builds at start (`WANSERVE_PRELOAD`: all, none or names)."""
        wanted = self.settings.preload
        if wanted == ["all"]:
            return list(self.routes)
        return [] if wanted == ["none"] else list(wanted)

    def warm_up(
        self, models: Iterable[str] | None = None, *, stopping: threading.Event | None = None
    ) -> dict[str, EngineLoad]:
        """Build the engines of `models` (default: `preloaded_models`) before any job.

        A model that fails to load (or is not served here) is logged, not raised: its jobs
        then fail with the load error while the other models are served.
        """
        for name in self.preloaded_models() if models is None else models:
            if stopping is not None and stopping.is_set():
                break
            try:
                self.engine_for(name)
            except Exception:
                logger.exception("model %s: engine failed to load at warm-up", name)
        return self.load_states()

    def load_states(self) -> dict[str, EngineLoad]:
        """Each served model's load state in this process; safe from any thread."""
        with self._lock:
            return dict(self._loads)

    def loaded(self) -> dict[str, Engine]:
        """The engines built so far, by model; a copy, safe to take from any thread."""
        return self._engines.copy()

    def close(self) -> None:
        """Close every engine built so far."""
        for name, engine in list(self._engines.items()):
            engine.close()
            self._set_load(self.routes[name], "not_loaded")
        self._engines.clear()
