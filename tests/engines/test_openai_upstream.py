"""The `openai-upstream` engine against a local fake of the OpenAI Videos protocol."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from fakes.context import FakeContext, make_request, tiny_mp4
from fakes.provider import API_KEY, FakeProvider, Fault
from wanserve.engines import openai_upstream
from wanserve.engines.base import MediaInput
from wanserve.errors import EngineError, JobCancelled, UpstreamError
from wanserve.settings import Settings

FAST = {"poll_interval": 0.01, "max_poll_interval": 0.02, "retry_backoff": 0.01}


class Crash(Exception):
    """Stands for a worker dying mid-job."""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def run(fake: FakeProvider, tmp_path: Path, ctx: FakeContext | None = None, **kw: Any) -> Any:
    options = {"api_key": API_KEY, "base_url": fake.openai_url, **FAST, **kw.pop("options", {})}
    engine = openai_upstream.create_engine(Settings(), options)
    try:
        return engine.generate(make_request(tmp_path, **kw), ctx or FakeContext(tmp_path))
    finally:
        engine.close()


def test_success_downloads_the_content(fake, tmp_path):
    ctx = FakeContext(tmp_path)
    result = run(fake, tmp_path, ctx, public=True)
    with av.open(str(result.path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert result.metadata["provider"] == "openai-upstream"
    assert result.metadata["task_id"] == ctx.saved["task_id"] == next(iter(fake.tasks))
    assert result.metadata["seconds"] == "5"


def test_body_follows_the_videos_protocol(fake, tmp_path):
    run(fake, tmp_path, public=True, size_label="1280x720", negative_prompt="blur")
    (submission,) = fake.submissions
    assert submission["headers"]["Authorization"] == f"Bearer {API_KEY}"
    body = submission["body"]
    assert body["model"] == "wan2.7-i2v" and body["prompt"] == "a red square turns blue"
    assert body["size"] == "1280x720" and body["seconds"] == "5" and body["seed"] == 42
    assert body["negative_prompt"] == "blur"
    assert body["media"] == [
        {"type": "first_frame", "url": "https://images.example.com/first.png"},
        {"type": "last_frame", "url": "https://images.example.com/last.png"},
    ]


def test_local_only_media_are_sent_as_data_urls(fake, tmp_path):
    run(fake, tmp_path, audio=True)
    media = fake.submissions[0]["body"]["media"]
    assert [item["type"] for item in media] == ["first_frame", "last_frame", "driving_audio"]
    prefix = "data:image/png;base64,"
    assert media[0]["url"].startswith(prefix)
    decoded = base64.b64decode(media[0]["url"].removeprefix(prefix))
    assert decoded == (tmp_path / "first.png").read_bytes()
    assert media[2]["url"].startswith("data:audio/wav;base64,")


def test_failure_keeps_the_provider_code(fake, tmp_path):
    fake.fail_with = ("moderation_blocked", "The prompt was blocked.")
    with pytest.raises(UpstreamError) as caught:
        run(fake, tmp_path, public=True)
    assert caught.value.provider_code == "moderation_blocked"
    assert "blocked" in caught.value.message


def test_rejected_request_keeps_the_provider_code(fake, tmp_path):
    with pytest.raises(UpstreamError) as caught:
        run(fake, tmp_path, public=True, options={"api_key": "wrong"})
    assert caught.value.provider_code == "invalid_api_key"


def test_provider_progress_is_used(fake, tmp_path):
    fake.running_polls = 3
    ctx = FakeContext(tmp_path)
    run(fake, tmp_path, ctx, public=True)
    assert ctx.progress == pytest.approx([0.3, 0.6, 0.9])


def test_progress_is_estimated_without_a_provider_value(fake, tmp_path):
    fake.report_progress = False
    ctx = FakeContext(tmp_path)
    run(fake, tmp_path, ctx, public=True)
    assert ctx.progress == sorted(ctx.progress) and 0 < ctx.progress[-1] < 0.95


def test_throttling_and_server_errors_are_retried(fake, tmp_path):
    fake.faults += [
        Fault(429, method="GET", path_contains="/videos/", headers={"Retry-After": "0.05"}),
        Fault(502, count=2, method="GET", path_contains="/content"),
    ]
    assert run(fake, tmp_path, public=True).path.exists()
    assert len(fake.submissions) == 1


def test_cancel_is_forwarded(fake, tmp_path):
    fake.running_polls = 50
    ctx = FakeContext(tmp_path)

    def cancel_after_first_poll() -> None:
        ctx.cancelled = fake.poll_count >= 1

    ctx.check = cancel_after_first_poll
    with pytest.raises(JobCancelled):
        run(fake, tmp_path, ctx, public=True)
    assert fake.cancels == [ctx.saved["task_id"]]


def test_a_restarted_job_resumes_the_same_video(fake, tmp_path):
    fake.running_polls = 3
    first = FakeContext(tmp_path)

    def crash_on_second_poll() -> None:
        if fake.poll_count >= 2:
            raise Crash

    first.check = crash_on_second_poll
    with pytest.raises(Crash):
        run(fake, tmp_path, first, public=True)
    result = run(fake, tmp_path, FakeContext(tmp_path, saved=dict(first.saved)), public=True)
    assert len(fake.submissions) == 1
    assert result.metadata["task_id"] == first.saved["task_id"]


def test_a_job_started_on_another_provider_is_not_resumed_here(fake, tmp_path):
    ctx = FakeContext(tmp_path, saved={"provider": "dashscope", "task_id": "abc"})
    with pytest.raises(EngineError, match="dashscope"):
        run(fake, tmp_path, ctx, public=True)
    assert not fake.submissions


def test_settings_come_from_options_then_environment(monkeypatch):
    monkeypatch.setenv("WANSERVE_OPENAI_UPSTREAM_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("WANSERVE_OPENAI_UPSTREAM_UPSTREAM_MODEL", "sora-2")
    engine = openai_upstream.create_engine(Settings(), {})
    assert engine.base_url == "http://127.0.0.1:9/v1"
    assert engine.config.upstream_model == "sora-2"
    engine = openai_upstream.create_engine(Settings(), {"upstream_model": "wan2.7-i2v"})
    assert engine.config.upstream_model == "wan2.7-i2v"


def _clip(tmp_path: Path) -> MediaInput:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(tiny_mp4())
    return MediaInput(clip, "video/mp4", "https://videos.example.com/clip.mp4", duration=3.0)


def test_a_continuation_is_the_providers_videos_extend(fake, tmp_path):
    result = run(fake, tmp_path, first_clip=_clip(tmp_path), last_frame=None, seconds=4)
    (submission,) = fake.submissions
    assert submission["protocol"] == "openai-extend"
    form = submission["body"]
    assert form["content_type"].startswith("multipart/form-data")
    assert b'name="video"; filename="clip.mp4"' in form["raw"]
    assert tiny_mp4() in form["raw"]
    assert b'name="seconds"\r\n\r\n4' in form["raw"]
    assert result.path.exists()


def test_a_provider_without_videos_extend_fails_clearly(fake, tmp_path):
    fake.can_extend = False
    with pytest.raises(UpstreamError, match=r"has no videos\.extend") as caught:
        run(fake, tmp_path, first_clip=_clip(tmp_path), last_frame=None)
    assert caught.value.provider_code == "extend_unsupported"
    assert not fake.submissions


def test_videos_extend_takes_no_last_frame(fake, tmp_path):
    with pytest.raises(UpstreamError, match="no last_frame or driving_audio"):
        run(fake, tmp_path, first_clip=_clip(tmp_path))
