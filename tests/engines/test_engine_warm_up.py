"""Engines load when a worker starts, and the registry says which are loaded."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from wanserve.engines.registry import EngineLoad, EngineRegistry
from wanserve.errors import ModelNotFound
from wanserve.settings import Settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TINY = {"steps": 2, "frame_budget": 9, "max_area": 64 * 64, "device": "cpu"}


@pytest.fixture
def registry(tiny_models: dict[str, Path], tmp_path: Path) -> EngineRegistry:
    settings = Settings(
        data_dir=tmp_path,
        models={
            "wan-open": {"engine": "diffusers", "model": str(tiny_models["wan2.2-a14b"]), **TINY},
            "wan-broken": {"engine": "diffusers", "model": str(tmp_path / "missing"), **TINY},
        },
    )
    registry = EngineRegistry(settings)
    yield registry
    registry.close()


def test_warm_up_loads_every_model_and_reports_each(registry: EngineRegistry) -> None:
    assert {load.state for load in registry.load_states().values()} == {"not_loaded"}
    states = registry.warm_up()
    assert states["wan2.7-i2v"].state == "loaded" and states["wan2.7-i2v"].engine == "keyframe"
    loaded = states["wan-open"]
    assert (loaded.engine, loaded.state, loaded.error) == ("diffusers", "loaded", None)
    assert loaded.seconds is not None and loaded.seconds > 0
    broken = states["wan-broken"]
    assert broken.state == "failed" and "cannot read the Wan checkpoint" in (broken.error or "")
    # The first job finds the warm engine: no second load.
    assert registry.engine_for("wan-open") is registry.engine_for("wan-open")
    assert registry.load_states()["wan-open"].seconds == loaded.seconds
    assert json.loads(json.dumps(broken.as_dict()))["state"] == "failed"
    registry.close()
    assert registry.load_states()["wan-open"] == EngineLoad("diffusers", "not_loaded")


def test_preload_names_the_models_a_worker_loads(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model = {"engine": "diffusers", "model": str(tiny_models["wan2.2-a14b"]), **TINY}
    settings = Settings(data_dir=tmp_path, models={"wan-open": model}, preload="wan-open")
    registry = EngineRegistry(settings)
    states = registry.warm_up()
    assert (states["wan-open"].state, states["wan2.7-i2v"].state) == ("loaded", "not_loaded")
    registry.close()
    assert EngineRegistry(Settings(data_dir=tmp_path, preload="none")).preloaded_models() == []
    # A name not served here is logged at warm-up; the worker still starts.
    unknown = EngineRegistry(Settings(data_dir=tmp_path, preload="nope,wan2.7-i2v"))
    assert unknown.warm_up()["wan2.7-i2v"].state == "loaded"
    with pytest.raises(ModelNotFound):
        unknown.engine_for("nope")
    unknown.close()


def test_a_stopping_worker_stops_warming_up(registry: EngineRegistry) -> None:
    stopping = threading.Event()
    stopping.set()
    states = registry.warm_up(stopping=stopping)
    assert {load.state for load in states.values()} == {"not_loaded"}
