"""The real `dashscope` SDK (1.x `VideoSynthesis` calls and the 2.x client) against our server."""

from __future__ import annotations

import io
import json

import av
import dashscope
import httpx
import pytest
from dashscope import VideoSynthesis
from dashscope.v2 import Client
from dashscope.v2.errors import DashScopeError
from e2e_helpers import KEY_A, KEY_B

pytestmark = pytest.mark.slow

PROMPT = "A cat walks down the hallway."


def media(base: str) -> list[dict[str, str]]:
    return [
        {"type": "first_frame", "url": f"{base}/wide-first.png"},
        {"type": "last_frame", "url": f"{base}/wide-last.png"},
    ]


@pytest.fixture
def legacy_api(monkeypatch):
    """Points the 1.x calls at a server: `legacy_api(url)`."""

    def point(url: str) -> None:
        monkeypatch.setattr(dashscope, "base_http_api_url", f"{url}/api/v1")

    return point


def assert_mp4(url: str, key: str = KEY_A) -> None:
    content = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30).content
    with av.open(io.BytesIO(content)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (1280, 720)


def test_1x_async_call_fetch_wait_list(server_factory, media_server, legacy_api):
    server = server_factory(WANSERVE_MODELS=json.dumps({"wanx2.1-kf2v-plus": "keyframe"}))
    legacy_api(server.url)
    created = VideoSynthesis.async_call(
        model="wan2.7-i2v",
        prompt=PROMPT,
        media=media(media_server),
        resolution="720P",
        duration=2,
        seed=5,
        api_key=KEY_A,
    )
    assert created.status_code == 200, created
    assert created.output.task_status == "PENDING"
    task_id = created.output.task_id

    fetched = VideoSynthesis.fetch(created, api_key=KEY_A)
    assert fetched.output.task_id == task_id
    assert fetched.output.task_status in ("PENDING", "RUNNING", "SUCCEEDED")

    done = VideoSynthesis.wait(created, api_key=KEY_A)
    assert done.status_code == 200 and done.output.task_status == "SUCCEEDED", done
    assert done.output.orig_prompt == PROMPT
    assert done.usage.video_duration == 2 and done.usage.video_count == 1
    assert_mp4(done.output.video_url)
    video = httpx.get(
        f"{server.url}/v1/videos/{task_id}", headers={"Authorization": f"Bearer {KEY_A}"}
    ).json()
    assert video["status"] == "completed" and video["seed"] == 5

    # kf2v model names go to the image2video path with first_frame_url / last_frame_url.
    keyframes = VideoSynthesis.async_call(
        model="wanx2.1-kf2v-plus",
        prompt=PROMPT,
        first_frame_url=f"{media_server}/wide-first.png",
        last_frame_url=f"{media_server}/wide-last.png",
        resolution="720P",
        duration=2,
        api_key=KEY_A,
    )
    assert keyframes.status_code == 200, keyframes

    listing = VideoSynthesis.list(api_key=KEY_A, page_size=1)
    assert listing.status_code == 200, listing
    assert listing.output["total"] == 2 and listing.output["total_page"] == 2
    assert [t["task_id"] for t in listing.output["data"]] == [keyframes.output.task_id]
    mine = VideoSynthesis.list(api_key=KEY_A, status="SUCCEEDED", model_name="wan2.7-i2v")
    assert [t["task_id"] for t in mine.output["data"]] == [task_id]
    assert VideoSynthesis.list(api_key=KEY_B).output["total"] == 0


def test_1x_cancel_reads_canceled(server_factory, media_server, legacy_api):
    server = server_factory(workers=0)  # nothing runs the job: it stays PENDING
    legacy_api(server.url)
    created = VideoSynthesis.async_call(
        model="wan2.7-i2v", prompt=PROMPT, media=media(media_server), api_key=KEY_A
    )
    assert created.status_code == 200, created
    other = VideoSynthesis.fetch(created, api_key=KEY_B)
    assert other.status_code == 404 and other.code == "NotFound"
    assert VideoSynthesis.cancel(created, api_key=KEY_B).status_code == 404

    cancelled = VideoSynthesis.cancel(created, api_key=KEY_A)
    assert cancelled.status_code == 200, cancelled
    assert VideoSynthesis.fetch(created, api_key=KEY_A).output.task_status == "CANCELED"
    assert VideoSynthesis.wait(created, api_key=KEY_A).output.task_status == "CANCELED"
    again = VideoSynthesis.cancel(created, api_key=KEY_A)
    assert again.status_code == 400 and "already finished" in again.message


def test_1x_validation_error_reaches_the_caller(server_factory, media_server, legacy_api):
    server = server_factory(workers=0)
    legacy_api(server.url)
    answer = VideoSynthesis.async_call(
        model="wan2.7-i2v",
        prompt=PROMPT,
        img_url=f"{media_server}/wide-first.png",
        api_key=KEY_A,
    )
    assert answer.status_code == 400
    assert answer.code == "InvalidParameter" and "last_frame" in answer.message


def test_2x_client_generate_and_jobs(server_factory, media_server):
    server = server_factory()
    client = Client(base_url=f"{server.url}/api/v1", api_key=KEY_A)
    done = client.videos.generate(
        model="wan2.7-i2v",
        prompt=PROMPT,
        media=media(media_server),
        resolution="720P",
        duration=2,
        poll_interval=0.2,
        max_interval=0.5,
        timeout=120,
    )
    assert done.succeeded, done
    assert done.finished_at and done.submitted_at and done.usage is not None
    assert_mp4(done.video_url)

    job = client.videos.jobs.create(
        model="wan2.7-i2v",
        prompt=PROMPT,
        image_url=f"{media_server}/wide-first.png",  # 2.x shorthand for the first frame
        media=[{"type": "last_frame", "url": f"{media_server}/wide-last.png"}],
        resolution="720P",
        duration=2,
    )
    assert job.status == "PENDING" and job.task_id
    assert client.videos.jobs.fetch(job.task_id).task_id == job.task_id
    finished = client.videos.jobs.wait(job, poll_interval=0.2, max_interval=0.5, timeout=120)
    assert finished.succeeded and finished.video_url

    page = client.videos.jobs.list(page_size=10)
    assert page.total == 2
    assert {t.task_id for t in page.tasks} == {done.task_id, job.task_id}
    assert all(t.status == "SUCCEEDED" for t in page.tasks)


def test_2x_cancel_reads_canceled(server_factory, media_server):
    server = server_factory(workers=0)
    client = Client(base_url=f"{server.url}/api/v1", api_key=KEY_A)
    job = client.videos.jobs.create(model="wan2.7-i2v", prompt=PROMPT, media=media(media_server))
    client.videos.jobs.cancel(job.task_id)
    assert client.videos.jobs.fetch(job.task_id).status == "CANCELED"
    with pytest.raises(DashScopeError, match="canceled"):
        client.videos.jobs.wait(job.task_id, poll_interval=0.1, timeout=10)
    assert client.videos.jobs.list(status="CANCELED").total == 1
