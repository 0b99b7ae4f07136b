"""The fake provider checked against the official SDKs, so the engine tests mean something.

If the official `dashscope` and `openai` clients work against the fake, the fake follows
the protocols they implement, and the engines, tested against the fake, do too.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fakes.context import png_file
from fakes.provider import API_KEY, VIDEO, FakeProvider


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def test_dashscope_sdk_uploads_submits_waits_and_cancels(fake, tmp_path):
    v2 = pytest.importorskip("dashscope.v2")
    client = v2.Client(api_key=API_KEY, base_url=fake.base_url)
    first = png_file(tmp_path / "first.png", (1, 2, 3))
    media = [
        {"type": "first_frame", "url": str(first)},
        {"type": "last_frame", "url": "https://images.example.com/last.png"},
    ]
    job = client.videos.jobs.create(model="wan2.7-i2v", prompt="p", media=media, duration=5)
    assert job.status == "PENDING"
    (submission,) = fake.submissions
    assert submission["headers"]["X-DashScope-OssResourceResolve"] == "enable"
    (key,) = fake.uploads
    assert fake.uploads[key] == first.read_bytes()
    job = client.videos.jobs.wait(job, poll_interval=0.01)
    assert job.status == "SUCCEEDED" and job.usage.video_count == 1
    assert httpx.get(job.video_url).content == VIDEO
    public = [{"type": "first_frame", "url": "https://images.example.com/first.png"}]
    other = client.videos.jobs.create(model="wan2.7-i2v", prompt="p", media=public)
    client.videos.jobs.cancel(other.task_id)
    assert client.videos.jobs.fetch(other.task_id).status == "CANCELED"


def test_openai_sdk_reads_videos_and_content(fake):
    openai = pytest.importorskip("openai")
    body = {"model": "wan2.7-i2v", "prompt": "p", "seconds": "5", "size": "720P"}
    body["media"] = [{"type": "first_frame", "url": "https://images.example.com/a.png"}]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    created = httpx.post(fake.openai_url + "/videos", json=body, headers=headers).json()
    with openai.OpenAI(api_key=API_KEY, base_url=fake.openai_url, max_retries=0) as client:
        video = client.videos.poll(created["id"], poll_interval_ms=10)
        assert video.status == "completed" and video.progress == 100
        assert client.videos.download_content(video.id).content == VIDEO
