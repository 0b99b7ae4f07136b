"""The `dashscope` engine against a local fake of DashScope's video-synthesis protocol."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from fakes.context import FakeContext, make_request, tiny_mp4
from fakes.provider import API_KEY, FakeProvider, Fault
from wanserve.engines import dashscope
from wanserve.engines.base import MediaInput
from wanserve.engines.upstream import RESULT_GONE
from wanserve.errors import EngineError, JobCancelled, UpstreamError
from wanserve.settings import Settings

FAST = {"poll_interval": 0.01, "max_poll_interval": 0.02, "retry_backoff": 0.01}


class Crash(Exception):
    """Stands for a worker dying mid-job."""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def engine_for(fake: FakeProvider, **options: Any) -> dashscope.DashScopeEngine:
    return dashscope.create_engine(
        Settings(), {"api_key": API_KEY, "base_url": fake.base_url, **FAST, **options}
    )


def run(fake: FakeProvider, tmp_path: Path, ctx: FakeContext | None = None, **kw: Any) -> Any:
    options = kw.pop("options", {})
    engine = engine_for(fake, **options)
    try:
        return engine.generate(make_request(tmp_path, **kw), ctx or FakeContext(tmp_path))
    finally:
        engine.close()


def test_success_downloads_a_valid_mp4_with_provider_metadata(fake, tmp_path):
    ctx = FakeContext(tmp_path)
    engine = engine_for(fake)
    result = engine.generate(make_request(tmp_path, public=True), ctx)
    engine.close()
    assert result.path.parent == tmp_path
    with av.open(str(result.path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert result.metadata["task_id"] == ctx.saved["task_id"] == next(iter(fake.tasks))
    assert result.metadata["provider"] == "dashscope"
    assert result.metadata["orig_prompt"] == "a red square turns blue"
    assert result.metadata["actual_prompt"].endswith("(extended)")
    assert result.metadata["usage"]["duration"] == 5
    assert not list(tmp_path.glob("*.part"))


def test_submission_follows_the_video_synthesis_protocol(fake, tmp_path):
    run(fake, tmp_path, public=True, audio=True, size_label="720P", negative_prompt="blur")
    (submission,) = fake.submissions
    body, headers = submission["body"], submission["headers"]
    assert headers["X-DashScope-Async"] == "enable"
    assert "X-DashScope-OssResourceResolve" not in headers
    assert body["model"] == "wan2.7-i2v"
    assert body["input"] == {
        "prompt": "a red square turns blue",
        "negative_prompt": "blur",
        "media": [
            {"type": "first_frame", "url": "https://images.example.com/first.png"},
            {"type": "last_frame", "url": "https://images.example.com/last.png"},
            {"type": "driving_audio", "url": "https://images.example.com/voice.wav"},
        ],
    }
    assert body["parameters"] == {
        "resolution": "720P",
        "duration": 5,
        "prompt_extend": True,
        "watermark": False,
        "seed": 42,
    }
    assert fake.policies == 0 and not fake.uploads


def test_local_only_media_go_through_temporary_storage(fake, tmp_path):
    run(fake, tmp_path)
    (submission,) = fake.submissions
    assert submission["headers"]["X-DashScope-OssResourceResolve"] == "enable"
    urls = [item["url"] for item in submission["body"]["input"]["media"]]
    assert all(url.startswith("oss://") for url in urls)
    keys = [url.removeprefix("oss://") for url in urls]
    assert fake.uploads[keys[0]] == (tmp_path / "first.png").read_bytes()
    assert fake.uploads[keys[1]] == (tmp_path / "last.png").read_bytes()
    assert fake.policies == 1  # one policy serves every file of the job


def test_only_the_local_only_input_is_uploaded(fake, tmp_path):
    request = make_request(tmp_path, public=True)
    local_last = type(request.last_frame)(request.last_frame.path, "image/png", None)
    engine = engine_for(fake)
    engine.generate(
        make_request(tmp_path, public=True, last_frame=local_last), FakeContext(tmp_path)
    )
    engine.close()
    media = fake.submissions[0]["body"]["input"]["media"]
    assert media[0]["url"] == "https://images.example.com/first.png"
    assert media[1]["url"].startswith("oss://") and len(fake.uploads) == 1


def test_provider_failure_keeps_its_code(fake, tmp_path):
    fake.fail_with = ("DataInspectionFailed", "Input data may contain inappropriate content.")
    with pytest.raises(UpstreamError) as caught:
        run(fake, tmp_path, public=True)
    assert caught.value.code == "upstream_error"
    assert caught.value.provider_code == "DataInspectionFailed"
    assert "inappropriate" in caught.value.message


def test_rejected_submission_keeps_the_provider_code(fake, tmp_path):
    engine = dashscope.create_engine(Settings(), {"api_key": "wrong", "base_url": fake.base_url})
    with pytest.raises(UpstreamError) as caught:
        engine.generate(make_request(tmp_path, public=True), FakeContext(tmp_path))
    assert caught.value.provider_code == "InvalidApiKey"


def test_throttling_waits_as_long_as_retry_after_says(fake, tmp_path):
    fake.faults.append(
        Fault(429, count=2, method="GET", path_contains="/tasks/", headers={"Retry-After": "0.3"})
    )
    run(fake, tmp_path, public=True)
    log = [entry for entry in fake.log if "/tasks/" in entry[2]]
    throttled = [i for i, entry in enumerate(log) if entry[3] == 429]
    assert len(throttled) == 2
    for index in throttled:
        assert log[index + 1][0] - log[index][0] >= 0.29


@pytest.mark.parametrize("status", [500, 502, 503, None])
def test_transient_errors_while_polling_are_retried(fake, tmp_path, status):
    fake.faults.append(Fault(status, count=3, method="GET", path_contains="/tasks/"))
    result = run(fake, tmp_path, public=True)
    assert result.path.exists() and len(fake.submissions) == 1


def test_retries_are_bounded(fake, tmp_path):
    fake.faults.append(Fault(503, count=100, method="GET", path_contains="/tasks/"))
    with pytest.raises(EngineError) as caught:
        run(fake, tmp_path, public=True, options={"max_retries": 2})
    assert caught.value.code == "upstream_error"
    assert not isinstance(caught.value, UpstreamError)


def test_a_submission_that_may_have_arrived_is_never_resent(fake, tmp_path):
    fake.faults.append(Fault(None, method="POST", path_contains="video-synthesis"))
    with pytest.raises(EngineError):
        run(fake, tmp_path, public=True)
    posts = [entry for entry in fake.log if entry[1] == "POST"]
    assert len(posts) == 1


def test_throttled_submission_is_resent(fake, tmp_path):
    fake.faults.append(
        Fault(429, method="POST", path_contains="video-synthesis", headers={"Retry-After": "0"})
    )
    run(fake, tmp_path, public=True)
    assert len(fake.submissions) == 1


def test_cancel_is_forwarded_and_reraised(fake, tmp_path):
    fake.running_polls = 50
    ctx = FakeContext(tmp_path)

    def cancel_after_first_poll() -> None:
        ctx.cancelled = fake.poll_count >= 1

    ctx.check = cancel_after_first_poll
    with pytest.raises(JobCancelled):
        run(fake, tmp_path, ctx, public=True)
    assert fake.cancels == [ctx.saved["task_id"]]
    assert fake.tasks[ctx.saved["task_id"]].status == "CANCELED"


def test_a_task_cancelled_at_the_provider_cancels_the_job(fake, tmp_path):
    fake.running_polls = 50
    ctx = FakeContext(tmp_path)

    def cancel_upstream() -> None:
        for task in fake.tasks.values():
            task.status = "CANCELED"

    ctx.check = cancel_upstream
    with pytest.raises(JobCancelled):
        run(fake, tmp_path, ctx, public=True)


def test_a_restarted_job_resumes_the_same_task(fake, tmp_path):
    fake.running_polls = 3
    first = FakeContext(tmp_path)

    def crash_on_second_poll() -> None:
        if fake.poll_count >= 2:
            raise Crash

    first.check = crash_on_second_poll
    with pytest.raises(Crash):
        run(fake, tmp_path, first)
    assert first.saved["task_id"] and not fake.cancels
    second = FakeContext(tmp_path, saved=dict(first.saved))
    result = run(fake, tmp_path, second)
    assert len(fake.submissions) == 1
    assert fake.policies == 1  # nothing uploaded again either
    assert result.metadata["task_id"] == first.saved["task_id"]


def test_an_expired_result_url_is_fetched_again(fake, tmp_path):
    fake.expired_urls = 1
    result = run(fake, tmp_path, public=True)
    downloads = [entry[3] for entry in fake.log if entry[2].startswith("/oss/results/")]
    assert downloads == [403, 200] and result.path.exists()


def test_a_result_that_stays_unavailable_fails_the_job(fake, tmp_path):
    fake.expired_urls = 5
    with pytest.raises(UpstreamError) as caught:
        run(fake, tmp_path, public=True)
    assert caught.value.provider_code == RESULT_GONE


def test_oversized_results_are_refused(fake, tmp_path):
    with pytest.raises(EngineError, match="larger than"):
        run(fake, tmp_path, public=True, options={"max_download_bytes": 100})
    assert not list(tmp_path.glob("upstream.mp4*"))


def test_a_task_unknown_for_too_long_times_out(fake, tmp_path):
    fake.always_unknown = True
    ctx = FakeContext(tmp_path)
    with pytest.raises(EngineError) as caught:
        run(fake, tmp_path, ctx, public=True, options={"unknown_timeout": 0.2})
    assert caught.value.code == "timeout"
    assert fake.cancels == [ctx.saved["task_id"]]


def test_progress_is_estimated_monotonic_and_below_one(fake, tmp_path):
    fake.running_polls = 6
    ctx = FakeContext(tmp_path)
    engine = engine_for(fake, expected_seconds=0.1)
    engine.generate(make_request(tmp_path, public=True), ctx)
    assert len(ctx.progress) == 6
    assert ctx.progress == sorted(ctx.progress)
    assert ctx.progress[0] > 0 and ctx.progress[-1] <= 0.95
    assert engine.estimate.expected != 0.1  # the moving average learned this run
    engine.close()


@pytest.mark.parametrize(
    ("label", "width", "height", "expected"),
    [
        ("720p", 1280, 720, "720P"),
        ("1080P", 1920, 1080, "1080P"),
        ("1280x720", 1280, 720, "720P"),
        ("720x1280", 720, 1280, "720P"),
        ("1440x1080", 1440, 1080, "1080P"),
    ],
)
def test_resolution_tier(tmp_path, label, width, height, expected):
    request = make_request(tmp_path, size_label=label, width=width, height=height)
    assert dashscope.resolution(request) == expected


def test_settings_come_from_options_then_environment(monkeypatch):
    monkeypatch.setenv("WANSERVE_DASHSCOPE_API_KEY", "from-env")
    monkeypatch.setenv("WANSERVE_DASHSCOPE_TIMEOUT", "15m")
    engine = dashscope.create_engine(Settings(), {"upstream_model": "wan2.7-i2v-2026-04-25"})
    assert engine.base_url == dashscope.INTERNATIONAL_URL
    assert engine.config.timeout == 900 and engine.config.upstream_model.endswith("04-25")
    monkeypatch.setenv("WANSERVE_DASHSCOPE_BASE_URL", dashscope.MAINLAND_URL)
    assert dashscope.create_engine(Settings(), {}).base_url == dashscope.MAINLAND_URL
    overridden = dashscope.create_engine(Settings(), {"base_url": "http://127.0.0.1:9/api/v1"})
    assert overridden.base_url == "http://127.0.0.1:9/api/v1"
    assert "from-env" not in repr(overridden.config)


def test_an_api_key_is_required(monkeypatch):
    monkeypatch.delenv("WANSERVE_DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(EngineError, match="API_KEY"):
        dashscope.create_engine(Settings(), {})


def test_a_continuation_forwards_the_clip_as_first_clip(fake, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(tiny_mp4())
    public = MediaInput(clip, "video/mp4", "https://videos.example.com/clip.mp4", duration=3.0)
    run(fake, tmp_path, public=True, first_clip=public, seconds=4)
    body = fake.submissions[0]["body"]
    assert body["input"]["media"] == [
        {"type": "first_clip", "url": "https://videos.example.com/clip.mp4"},
        {"type": "last_frame", "url": "https://images.example.com/last.png"},
    ]
    assert body["parameters"]["duration"] == 7  # DashScope counts the clip in the duration
    # A clip only we hold is uploaded to temporary storage like any other medium.
    local = MediaInput(clip, "video/mp4", None, duration=3.0)
    run(fake, tmp_path, first_clip=local, last_frame=None, seconds=2)
    media = fake.submissions[1]["body"]["input"]["media"]
    assert [item["type"] for item in media] == ["first_clip"]
    assert fake.uploads[media[0]["url"].removeprefix("oss://")] == tiny_mp4()
