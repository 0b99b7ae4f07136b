"""Which engine serves which model name, and building engines on demand."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wanserve.engines.base import Engine
from wanserve.errors import ModelNotFound
from wanserve.settings import DEFAULT_MODEL, Settings

logger = logging.getLogger(__name__)

# Engine name -> module exposing `create_engine(settings, options)`. Imported lazily so the
# base install never imports torch or a provider SDK it does not use.
ENGINE_MODULES = {
    "keyframe": "wanserve.engines.keyframe",
    "diffusers": "wanserve.engines.diffusers",
    "dashscope": "wanserve.engines.dashscope",
    "openai-upstream": "wanserve.engines.openai_upstream",
}


@dataclass(frozen=True)
class ModelRoute:
    """A served model name, the engine behind it and that engine's options."""

    name: str
    engine: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _routes_from(settings: Settings) -> dict[str, ModelRoute]:
    routes = {DEFAULT_MODEL: ModelRoute(DEFAULT_MODEL, settings.engine)}
    for name, spec in settings.models.items():
        if isinstance(spec, str):
            spec = {"engine": spec}
        options = {k: v for k, v in spec.items() if k != "engine"}
        routes[name] = ModelRoute(name, spec.get("engine", settings.engine), options)
    for route in routes.values():
        if route.engine not in ENGINE_MODULES:
            known = ", ".join(sorted(ENGINE_MODULES))
            raise ValueError(f"model {route.name!r}: unknown engine {route.engine!r} ({known})")
    return routes


class EngineRegistry:
    """Model names to engines; engines are built once per process, on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.routes = _routes_from(settings)
        self._engines: dict[str, Engine] = {}

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
        """The (cached) engine instance serving `model`."""
        route = self.route(model)
        if model not in self._engines:
            module = importlib.import_module(ENGINE_MODULES[route.engine])
            logger.info("loading engine %s for model %s", route.engine, model)
            self._engines[model] = module.create_engine(self.settings, route.options)
        return self._engines[model]

    def close(self) -> None:
        """Close every engine built so far."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
