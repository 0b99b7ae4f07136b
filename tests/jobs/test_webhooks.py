"""Webhooks: the outbox written with the change, signed deliveries, retries, 410, expiry."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import openai
import pytest

from helpers import ManualClock
from netguard import LoopbackOnly, loopback_fetcher, no_dns
from receiver import receiver
from wanserve.jobs.delivery import ANYWHERE, Dispatcher, Outbox
from wanserve.jobs.lifecycle import cancel_job
from wanserve.jobs.model import Job, JobSpec, JobStatus, MediaRef, owner_of
from wanserve.jobs.store import JobStore
from wanserve.jobs.webhooks import WebhookConfig
from wanserve.media.fetch import MediaFetcher
from wanserve.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"a test secret of thirty-two bytes").decode()
KEY_SECRET = "whsec_" + base64.b64encode(b"the secret of one key alone").decode()
SPEC = JobSpec(
    prompt="p", negative_prompt="", size="720P", width=1280, height=720, seconds=2, seed=7
)
ROUTES = ["wan2.7-i2v"]


def webhook_settings(tmp_path: Path, url: str, **extra: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        webhook_url=url,
        webhook_secret=SECRET,
        media_allowed_hosts=["127.0.0.1"],
        **extra,
    )


def dispatcher(settings: Settings, store: JobStore) -> Dispatcher:
    """A dispatcher on the test store that dials loopback only; jitter fixed at half."""
    trusted = MediaFetcher(allowed_hosts=ANYWHERE, resolver=no_dns, network_backend=LoopbackOnly())
    return Dispatcher(
        settings,
        Outbox(store.engine, clock=store.clock),
        checked=loopback_fetcher(settings),
        trusted=trusted,
        jitter=lambda: 0.5,
    )


def queued_job(store: JobStore, settings: Settings, owner: str = "owner-a") -> Job:
    job = Job(
        id=f"video_{uuid.uuid4().hex}",
        owner=owner,
        model="wan2.7-i2v",
        engine="keyframe",
        status=JobStatus.QUEUED,
        spec=SPEC,
        media=[MediaRef("first_frame", "k1", "image/png", width=640, height=360)],
        created_at=store.clock(),
        webhooks=WebhookConfig(settings).targets(owner),
    )
    return store.create(job)


def complete(store: JobStore, job: Job) -> None:
    assert store.claim_job(job.id, "w1") is not None
    store.transition(
        job.id,
        JobStatus.COMPLETED,
        expect=JobStatus.IN_PROGRESS,
        worker_id="w1",
        progress=100,
        completed_at=store.clock(),
        result={"duration": 2.0},
    )


def test_the_openai_sdk_verifies_a_delivered_webhook(store: JobStore, tmp_path: Path):
    with receiver() as hook:
        settings = webhook_settings(tmp_path, hook.url)
        job = queued_job(store, settings)
        complete(store, job)
        assert dispatcher(settings, store).run_once() == 1
        (delivery,) = hook.wait_for(1)
    client = openai.OpenAI(api_key="unused")
    event = client.webhooks.unwrap(delivery.body, delivery.headers, secret=SECRET)
    assert event.type == "video.completed"
    assert event.data.id == job.id
    body = json.loads(delivery.body)
    assert body["object"] == "event" and body["id"].startswith("evt_")
    assert set(body) == {"id", "object", "type", "created_at", "data"}
    # A tampered body or another secret is refused by the same SDK call.
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(
            delivery.body.replace(b"completed", b"failed"), delivery.headers, secret=SECRET
        )
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(delivery.body, delivery.headers, secret=KEY_SECRET)
    (row,) = Outbox(store.engine, clock=store.clock).of_job(job.id)
    assert (row.state, row.last_status, row.attempts) == ("delivered", 200, 1)


def test_a_receiver_failing_three_times_gets_the_event_again_with_the_same_id(
    store: JobStore, clock: ManualClock, tmp_path: Path
):
    with receiver([500, 503, 502]) as hook:
        settings = webhook_settings(tmp_path, hook.url)
        sender = dispatcher(settings, store)
        job = queued_job(store, settings)
        complete(store, job)
        gaps = []
        for attempt in range(1, 5):
            assert sender.run_once() == 1
            hook.wait_for(attempt)
            assert sender.run_once() == 0  # not due again before its backoff
            (row,) = sender.outbox.of_job(job.id)
            gaps.append(row.next_attempt_at - clock())
            clock.advance(gaps[-1])
        clock.advance(3600)
        assert sender.run_once() == 0  # delivered: never sent again
    ids = {d.headers["webhook-id"] for d in hook.deliveries}
    assert len(hook.deliveries) == 4 and len(ids) == 1
    assert [d.answered for d in hook.deliveries] == [500, 503, 502, 200]
    assert len({d.body for d in hook.deliveries}) == 1  # the same event each time
    # Exponential: 5 s, 10 s, 20 s at the fixed jitter (three quarters of each base).
    assert gaps[:3] == pytest.approx([3.75, 7.5, 15.0])
    for delivery in hook.deliveries:
        openai.OpenAI(api_key="unused").webhooks.verify_signature(
            delivery.body, delivery.headers, secret=SECRET
        )
    (row,) = sender.outbox.of_job(job.id)
    assert (row.state, row.attempts) == ("delivered", 4)


def test_410_stops_and_retries_end_after_the_window(
    store: JobStore, clock: ManualClock, tmp_path: Path
):
    with receiver([410]) as hook:
        settings = webhook_settings(tmp_path, hook.url, webhook_retry_for=60)
        sender = dispatcher(settings, store)
        gone = queued_job(store, settings)
        complete(store, gone)
        assert sender.run_once() == 1
        clock.advance(7200)
        assert sender.run_once() == 0
        assert sender.outbox.of_job(gone.id)[0].state == "gone"
        hook.default = 500
        failing = queued_job(store, settings)
        complete(store, failing)
        sent = 0
        while sender.run_once():
            sent += 1
            clock.advance(3600)
        assert 1 <= sent < 10
        assert sender.outbox.of_job(failing.id)[0].state == "failed"
    assert sender.outbox.counts() == {"gone": 1, "failed": 1}


def test_a_cancel_is_video_failed_with_its_code_and_only_the_real_change_writes(
    store: JobStore, tmp_path: Path
):
    with receiver() as hook:
        settings = webhook_settings(tmp_path, hook.url)
        job = queued_job(store, settings)
        running = queued_job(store, settings)
        assert Outbox(store.engine, clock=store.clock).of_job(job.id) == []
        cancel_job(store, job)
        with pytest.raises(Exception, match="already finished"):
            cancel_job(store, job)
        assert len(Outbox(store.engine, clock=store.clock).of_job(job.id)) == 1
        # Progress and a claim are not events; only the terminal change is.
        store.claim("w1", ROUTES)
        store.claim("w1", ROUTES)
        store.set_progress(running.id, 40)
        assert Outbox(store.engine, clock=store.clock).of_job(running.id) == []
        assert dispatcher(settings, store).run_once() == 1
        (delivery,) = hook.wait_for(1)
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(
        delivery.body, delivery.headers, secret=SECRET
    )
    assert event.type == "video.failed"
    assert json.loads(delivery.body)["data"] == {"id": job.id, "error": {"code": "cancelled"}}


def test_a_key_of_its_own_gets_its_events_signed_with_its_secret(store: JobStore, tmp_path: Path):
    with receiver() as operator, receiver() as own:
        settings = webhook_settings(
            tmp_path, operator.url, webhooks={"key-a": {"url": own.url, "secret": KEY_SECRET}}
        )
        job = queued_job(store, settings, owner=owner_of("key-a"))
        other = queued_job(store, settings, owner=owner_of("key-b"))
        complete(store, job)
        complete(store, other)
        assert dispatcher(settings, store).run_once() == 3
        (mine,) = own.wait_for(1)
        theirs = operator.wait_for(2)
    sdk = openai.OpenAI(api_key="unused").webhooks
    assert sdk.unwrap(mine.body, mine.headers, secret=KEY_SECRET).data.id == job.id
    assert {sdk.unwrap(d.body, d.headers, secret=SECRET).data.id for d in theirs} == {
        job.id,
        other.id,
    }
