"""The diffusers engine behind the HTTP service, on a tiny Wan pipeline built here."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from helpers import seed_body

pytest.importorskip("diffusers")
from engines.tiny_wan import build_tiny_pipeline
from wanserve.api.app import create_app
from wanserve.jobs.runtime import build_worker

pytestmark = pytest.mark.slow
TINY = {"steps": 2, "frame_budget": 9, "max_area": 64 * 64, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline("wan2.1-flf2v", tmp_path_factory.mktemp("wan") / "flf2v")


@pytest.fixture
def service(settings, tiny_model):
    settings.models = {
        "wan-open": {"engine": "diffusers", "model": str(tiny_model), **TINY},
        "wan-slow": {"engine": "diffusers", "model": str(tiny_model), **TINY, "steps": 400},
    }
    worker = build_worker(settings)
    thread = threading.Thread(target=worker.run, daemon=True)
    with TestClient(create_app(settings, workers=0)) as client:
        thread.start()
        yield client
        worker.stopping.set()
        thread.join(60)
    worker.registry.close()


def _wait(client, video_id, timeout=240):
    progress = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{video_id}").json()
        progress.append(video["progress"])
        if video["status"] in ("completed", "failed"):
            return video, progress
        time.sleep(0.02)
    raise AssertionError(f"{video_id} did not finish")


def _frames(client, video_id):
    content = client.get(f"/v1/videos/{video_id}/content").content
    with av.open(io.BytesIO(content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        return frames, bool(container.streams.audio), float(container.duration / 1e6)


def test_a_diffusers_job_through_the_api(service, media_server):
    body = seed_body(media_server, model="wan-open", size="320x240", seed=11, audio=True)
    created = service.post("/v1/videos", json=body).json()
    assert created["engine"] == "diffusers"
    video, progress = _wait(service, created["id"])
    assert video["status"] == "completed", video
    assert progress == sorted(progress) and len(set(progress)) >= 3, progress
    assert (video["width"], video["height"]) == (320, 240)
    frames, has_audio, duration = _frames(service, created["id"])
    assert frames[0].shape == (240, 320, 3)
    assert abs(duration - 2.0) <= 1 / video["fps"] + 0.05
    assert has_audio

    again = service.post("/v1/videos", json=body).json()
    assert _wait(service, again["id"])[0]["status"] == "completed"
    repeat, _, _ = _frames(service, again["id"])
    assert all(np.array_equal(a, b) for a, b in zip(frames, repeat, strict=True))


def test_cancelling_a_diffusers_job_mid_denoising(service, media_server):
    body = seed_body(media_server, model="wan-slow", size="320x240")
    created = service.post("/v1/videos", json=body).json()
    deadline = time.monotonic() + 120
    while service.get(f"/v1/videos/{created['id']}").json()["progress"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled_at = time.monotonic()
    service.post(f"/v1/videos/{created['id']}/cancel")
    video, _ = _wait(service, created["id"])
    assert video["error"]["code"] == "cancelled"
    follow_up = service.post("/v1/videos", json=seed_body(media_server, model="wan-open")).json()
    assert _wait(service, follow_up["id"])[0]["status"] == "completed"
    # The worker let go of the cancelled job within a few denoising steps, not 400.
    assert time.monotonic() - cancelled_at < 60
