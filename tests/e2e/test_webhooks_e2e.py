"""Webhooks from the real server: a delivery pending when every process is killed is sent
after the restart, with the same webhook-id, and the openai SDK verifies it."""

from __future__ import annotations

import base64
import time

import httpx
import openai
import pytest
from e2e_helpers import KEY_A, wait_done

from helpers import seed_body
from receiver import receiver

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"end-to-end webhook secret bytes!").decode()


def test_a_pending_delivery_survives_killing_the_api_and_its_worker(server_factory, media_server):
    with receiver() as hook:
        hook.default = 503  # the receiver is down at first
        server = server_factory(
            workers=1,
            WANSERVE_WEBHOOK_URL=hook.url,
            WANSERVE_WEBHOOK_SECRET=SECRET,
            WANSERVE_WEBHOOK_FIRST_RETRY="1",
        )
        created = httpx.post(
            f"{server.url}/v1/videos",
            headers={"Authorization": f"Bearer {KEY_A}"},
            json=seed_body(media_server),
        )
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        assert wait_done(server.url, video_id)["status"] == "completed"
        (first,) = hook.wait_for(1)[:1]
        server.kill()  # SIGKILL: the API process and its worker, nothing handed back
        hook.default = 200
        server.restart()
        delivered = next(d for d in _until_answered(hook, 200) if d.answered == 200)
        recorded = 'wanserve_webhook_deliveries{state="delivered"} 1.0'
        deadline = time.monotonic() + 30
        while recorded not in httpx.get(f"{server.url}/metrics").text:
            assert time.monotonic() < deadline, "the outcome never reached /metrics"
            time.sleep(0.2)
    assert first.answered == 503
    assert delivered.headers["webhook-id"] == first.headers["webhook-id"]
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(
        delivered.body, delivered.headers, secret=SECRET
    )
    assert event.type == "video.completed" and event.data.id == video_id


def _until_answered(hook, status: int):
    count = 1
    while True:
        count += 1
        deliveries = hook.wait_for(count, timeout=60)
        if any(d.answered == status for d in deliveries):
            return deliveries
