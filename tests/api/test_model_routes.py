"""Model names mapped to engines (WANSERVE_ENGINE / WANSERVE_MODELS)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from wanserve.api.app import create_app
from wanserve.engines.registry import EngineRegistry


def test_aliases_are_listed_and_served(settings, media_server):
    settings.models = {"wan-fast": {"engine": "keyframe", "work_width": 320}, "plain": "keyframe"}
    with TestClient(create_app(settings, workers=0)) as client:
        names = [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert names == ["plain", "wan-fast", "wan2.7-i2v"]
        video = client.post("/v1/videos", json=seed_body(media_server, model="wan-fast")).json()
        assert video["model"] == "wan-fast" and video["engine"] == "keyframe"


def test_an_unknown_engine_is_refused_at_start_up(settings):
    settings.engine = "no-such-engine"
    with pytest.raises(ValueError, match="unknown engine"):
        EngineRegistry(settings)


def test_the_default_model_runs_on_the_configured_engine(settings):
    settings.engine = "dashscope"
    assert EngineRegistry(settings).route("wan2.7-i2v").engine == "dashscope"
