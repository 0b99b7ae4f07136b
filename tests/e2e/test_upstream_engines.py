"""Whole jobs through our API with the upstream engines, against the local fake provider."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import av
import httpx
import pytest
from dashscope import VideoSynthesis
from e2e_helpers import KEY_A, wait_done
from fastapi.testclient import TestClient
from PIL import Image

from fakes.provider import API_KEY, FakeProvider
from helpers import seed_body
from wanserve.jobs.runtime import build_worker
from wanserve.jobs.worker import Worker
from wanserve.settings import Settings

pytestmark = pytest.mark.slow

FAST = {"poll_interval": 0.02, "max_poll_interval": 0.05, "retry_backoff": 0.01}
UPSTREAM_OPENAI = "wan2.7-i2v-openai"


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def settings(tmp_path, fake) -> Settings:
    """`wan2.7-i2v` on the dashscope engine, a second name on openai-upstream; both fake."""
    return Settings(
        data_dir=tmp_path / "data",
        media_allowed_hosts=["127.0.0.1"],
        poll_interval=0.05,
        encoder_preset="ultrafast",
        workers=0,
        job_lease=3,
        models={
            "wan2.7-i2v": {
                "engine": "dashscope",
                "api_key": API_KEY,
                "base_url": fake.base_url,
                **FAST,
            },
            UPSTREAM_OPENAI: {
                "engine": "openai-upstream",
                "api_key": API_KEY,
                "base_url": fake.openai_url,
                **FAST,
            },
        },
    )


def start_worker(settings: Settings) -> tuple[Worker, threading.Thread]:
    runner = build_worker(settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    return runner, thread


def stop_worker(runner: Worker, thread: threading.Thread) -> None:
    runner.stopping.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    runner.registry.close()


def wait_video(client: TestClient, video_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        video = client.get(f"/v1/videos/{video_id}").json()
        if video["status"] in ("completed", "failed"):
            return video
        time.sleep(0.05)
    raise AssertionError(f"{video_id} stuck: {video}")


def assert_served_from_us(client: TestClient, video: dict) -> None:
    """The video, thumbnail and spritesheet come from our storage, not the provider."""
    assert video["video_url"].endswith(f"/v1/videos/{video['id']}/content")
    content = client.get(f"/v1/videos/{video['id']}/content")
    assert content.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(content.content)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 1
    thumb = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
    assert Image.open(io.BytesIO(thumb.content)).format == "WEBP"
    sprite = client.get(f"/v1/videos/{video['id']}/content", params={"variant": "spritesheet"})
    assert sprite.status_code == 200 and sprite.headers["content-type"] == "image/jpeg"


def test_dashscope_engine_job_through_both_apis(client, worker, fake, media_server):
    body = {
        "model": "wan2.7-i2v",
        "input": {"prompt": "a cat", "media": seed_body(media_server)["media"]},
        "parameters": {"resolution": "720P", "duration": 3, "seed": 9},
    }
    created = client.post(
        "/api/v1/services/aigc/video-generation/video-synthesis",
        json=body,
        headers={"X-DashScope-Async": "enable"},
    )
    task_id = created.json()["output"]["task_id"]
    video = wait_video(client, task_id)
    assert video["status"] == "completed", video
    assert video["engine"] == "dashscope" and video["progress"] == 100
    assert_served_from_us(client, video)

    (submission,) = fake.submissions
    assert submission["body"]["parameters"]["duration"] == 3
    assert submission["body"]["parameters"]["seed"] == 9
    task = client.get(f"/api/v1/tasks/{task_id}").json()
    assert task["output"]["task_status"] == "SUCCEEDED"
    assert task["output"]["actual_prompt"] == "a cat (extended)"  # the provider's extension
    assert task["output"]["orig_prompt"] == "a cat"


def test_openai_upstream_engine_job(client, worker, fake, media_server):
    created = client.post("/v1/videos", json=seed_body(media_server, model=UPSTREAM_OPENAI))
    assert created.status_code == 200, created.text
    video = wait_video(client, created.json()["id"])
    assert video["status"] == "completed", video
    assert video["engine"] == "openai-upstream" and video["model"] == UPSTREAM_OPENAI
    assert_served_from_us(client, video)
    assert [s["protocol"] for s in fake.submissions] == ["openai"]


def test_provider_failure_becomes_upstream_error(client, worker, fake, media_server):
    fake.fail_with = ("DataInspectionFailed", "Input data may contain inappropriate content.")
    created = client.post("/v1/videos", json=seed_body(media_server)).json()
    video = wait_video(client, created["id"])
    assert video["status"] == "failed"
    assert video["error"]["code"] == "upstream_error"
    assert "DataInspectionFailed" in video["error"]["message"]
    task = client.get(f"/api/v1/tasks/{created['id']}").json()["output"]
    assert task["task_status"] == "FAILED" and task["code"] == "upstream_error"


@pytest.mark.parametrize("model", ["wan2.7-i2v", UPSTREAM_OPENAI])
def test_worker_restart_mid_task_submits_once(client, settings, fake, media_server, model):
    fake.running_polls = 10**9  # the provider keeps the task running until told otherwise
    created = client.post("/v1/videos", json=seed_body(media_server, model=model)).json()
    store = client.app.state.services.store  # type: ignore[attr-defined]

    first = start_worker(settings)
    deadline = time.monotonic() + 30
    while not store.get(created["id"]).engine_state and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.get(created["id"]).engine_state, "the provider task id was never saved"
    polls_before = fake.poll_count
    stop_worker(*first)  # mid-task: the job goes back to the queue
    assert client.get(f"/v1/videos/{created['id']}").json()["status"] == "queued"

    fake.running_polls = fake.poll_count + 2
    second = start_worker(settings)
    try:
        video = wait_video(client, created["id"])
    finally:
        stop_worker(*second)
    assert video["status"] == "completed", video
    assert len(fake.submissions) == 1, "a restarted worker must resume, not submit again"
    assert fake.poll_count > polls_before
    assert_served_from_us(client, video)


def test_real_server_with_dashscope_engine_from_env(
    server_factory, fake, media_server, monkeypatch
):
    """DashScope SDK -> wanserve (WANSERVE_ENGINE=dashscope) -> the fake DashScope."""
    server = server_factory(
        WANSERVE_ENGINE="dashscope",
        WANSERVE_DASHSCOPE_API_KEY=API_KEY,
        WANSERVE_DASHSCOPE_BASE_URL=fake.base_url,
        WANSERVE_DASHSCOPE_POLL_INTERVAL="0.05",
        WANSERVE_DASHSCOPE_MAX_POLL_INTERVAL="0.1",
    )
    monkeypatch.setattr("dashscope.base_http_api_url", f"{server.url}/api/v1")
    created = VideoSynthesis.async_call(
        model="wan2.7-i2v",
        prompt="a cat",
        media=seed_body(media_server)["media"],
        resolution="720P",
        duration=2,
        api_key=KEY_A,
    )
    assert created.status_code == 200, created
    video = wait_done(server.url, created.output.task_id)
    assert video["status"] == "completed" and video["engine"] == "dashscope", video
    done = VideoSynthesis.fetch(created, api_key=KEY_A)
    assert done.output.task_status == "SUCCEEDED"
    assert done.output.actual_prompt == "a cat (extended)"
    content = httpx.get(done.output.video_url, headers={"Authorization": f"Bearer {KEY_A}"})
    assert content.status_code == 200 and content.headers["content-type"] == "video/mp4"
    assert len(fake.submissions) == 1
