"""Shared provider plumbing: Retry-After, duration estimate, retrying client, download."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import httpx
import pytest

from fakes.context import FakeContext
from wanserve.engines.upstream import (
    NOT_SENT,
    PROGRESS_CAP,
    RESULT_GONE,
    DurationEstimate,
    TaskSnapshot,
    UpstreamClient,
    UpstreamSettings,
    check_mp4,
    pause,
    poll_until_finished,
    retry_after,
)
from wanserve.errors import EngineError, JobCancelled, UpstreamError

FAST = UpstreamSettings(poll_interval=0.01, max_poll_interval=0.01, retry_backoff=0.01)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-2"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
    ],
)
def test_retry_after(headers, expected):
    assert retry_after(httpx.Headers(headers)) == expected


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (retry_after(httpx.Headers({"retry-after": when})) or 0) <= 30


def test_duration_estimate_rises_stays_below_the_cap_and_learns():
    estimate = DurationEstimate(100.0)
    values = [estimate.fraction(t) for t in (0, 10, 50, 100, 1000, 10**6)]
    assert values == sorted(values) and values[0] == 0 and values[-1] <= PROGRESS_CAP
    assert 0.8 < estimate.fraction(100) < 0.85
    estimate.record(200.0)
    assert estimate.expected == pytest.approx(130.0)
    estimate.record(0)  # ignored
    assert estimate.expected == pytest.approx(130.0)


def scripted(*answers: int | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering each request with the next status (or raising)."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, json={"ok": answer})

    return httpx.MockTransport(handle), seen


def test_client_retries_server_errors_then_answers():
    transport, seen = scripted(503, 500, 200)
    client = UpstreamClient(FAST, provider="p", transport=transport)
    assert client.request("GET", "http://127.0.0.1/x").status_code == 200
    assert len(seen) == 3


def test_client_gives_up_after_max_retries():
    transport, seen = scripted(*[503] * 10)
    config = FAST.model_copy(update={"max_retries": 2})
    with pytest.raises(EngineError, match="3 times") as caught:
        UpstreamClient(config, provider="p", transport=transport).request("GET", "http://h/x")
    assert caught.value.code == "upstream_error" and len(seen) == 3


def test_client_returns_other_errors_unretried():
    transport, seen = scripted(400)
    client = UpstreamClient(FAST, provider="p", transport=transport)
    assert client.request("GET", "http://h/x").status_code == 400 and len(seen) == 1


def test_a_post_is_resent_only_when_it_never_left():
    request = httpx.Request("POST", "http://h/x")
    transport, seen = scripted(httpx.ConnectError("refused", request=request), 200)
    client = UpstreamClient(FAST, provider="p", transport=transport)
    assert client.request("POST", "http://h/x", resend_on=NOT_SENT).status_code == 200
    transport, seen = scripted(httpx.ReadTimeout("slow", request=request), 200)
    client = UpstreamClient(FAST, provider="p", transport=transport)
    with pytest.raises(EngineError, match="ReadTimeout"):
        client.request("POST", "http://h/x", resend_on=NOT_SENT)
    assert len(seen) == 1


def test_a_retry_wait_honours_cancel(tmp_path):
    ctx = FakeContext(tmp_path, cancelled=True)
    transport, seen = scripted(503, 200)
    client = UpstreamClient(FAST, provider="p", transport=transport)
    with pytest.raises(JobCancelled):
        client.request("GET", "http://h/x", context=ctx)
    assert len(seen) == 1


def test_pause_checks_for_cancel(tmp_path):
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        pause(FakeContext(tmp_path, cancelled=True), 5.0)
    assert time.monotonic() - started < 1.0


def download_transport(body: bytes, status: int = 200) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, content=body))


def test_download_writes_through_a_temporary_name(tmp_path: Path):
    client = UpstreamClient(FAST, provider="p", transport=download_transport(b"x" * 5000))
    assert client.download("http://h/v.mp4", tmp_path / "v.mp4") == 5000
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_download_is_size_capped(tmp_path: Path):
    config = FAST.model_copy(update={"max_download_bytes": 1000})
    client = UpstreamClient(config, provider="p", transport=download_transport(b"x" * 5000))
    with pytest.raises(EngineError, match="larger than 1000"):
        client.download("http://h/v.mp4", tmp_path / "v.mp4")
    assert not list(tmp_path.iterdir())


def test_a_gone_result_is_reported_as_such(tmp_path: Path):
    client = UpstreamClient(FAST, provider="p", transport=download_transport(b"", 403))
    with pytest.raises(UpstreamError) as caught:
        client.download("http://h/v.mp4", tmp_path / "v.mp4")
    assert caught.value.provider_code == RESULT_GONE


def test_check_mp4_refuses_other_files(tmp_path: Path):
    page = tmp_path / "page.mp4"
    page.write_bytes(b"<html>error</html>")
    with pytest.raises(EngineError, match="not an MP4"):
        check_mp4(page, "p")


def poll(states: list[TaskSnapshot], ctx: FakeContext, config: UpstreamSettings, cancels: list):
    return poll_until_finished(
        lambda: states.pop(0) if len(states) > 1 else states[0],
        context=ctx,
        config=config,
        submitted_at=time.time(),
        estimate=DurationEstimate(10.0),
        cancel=lambda: cancels.append(1),
    )


def test_poll_returns_the_final_snapshot_and_reports_provider_progress(tmp_path):
    ctx, cancels = FakeContext(tmp_path), []
    states = [
        TaskSnapshot("pending"),
        TaskSnapshot("running", progress=0.5),
        TaskSnapshot("running", progress=0.4),  # never reported lower
        TaskSnapshot("succeeded", {"done": True}),
    ]
    final = poll(states, ctx, FAST, cancels)
    assert final.body == {"done": True} and not cancels
    assert ctx.progress[1:] == [0.5, 0.5]


def test_poll_gives_up_on_a_task_past_its_timeout(tmp_path):
    ctx, cancels = FakeContext(tmp_path), []
    config = FAST.model_copy(update={"timeout": 0.05})
    with pytest.raises(EngineError) as caught:
        poll([TaskSnapshot("running")], ctx, config, cancels)
    assert caught.value.code == "timeout" and cancels == [1]


class Stopping(JobCancelled):
    """Like the worker's own shutdown signal: stop, but the job will run again."""


def test_poll_forwards_only_a_plain_cancel(tmp_path):
    for signal, forwarded in ((JobCancelled, [1]), (Stopping, []), (KeyboardInterrupt, [])):
        cancels: list[int] = []

        def interrupt(signal=signal) -> None:
            raise signal("stop")

        ctx = FakeContext(tmp_path, check=interrupt)
        with pytest.raises(signal):
            poll([TaskSnapshot("running")], ctx, FAST, cancels)
        assert cancels == forwarded


def test_settings_accept_durations():
    assert UpstreamSettings(timeout="2h", unknown_timeout="90").timeout == 7200
