"""A client's `webhook_url` through HTTP: checked like media at create, then told."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import openai
import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from netguard import loopback_fetcher
from receiver import receiver
from wanserve.api.app import create_app
from wanserve.jobs.delivery import Dispatcher, Outbox
from wanserve.jobs.lifecycle import cancel_job
from wanserve.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"the operator's webhook secret..").decode()


@pytest.fixture
def hooked(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"webhook_secret": Settings(webhook_secret=SECRET).webhook_secret}
    )


@pytest.fixture
def api(hooked: Settings) -> Iterator[TestClient]:
    app = create_app(hooked, fetcher=loopback_fetcher(hooked), workers=0)
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/hook",
        "http://0xa9.0xfe.0xa9.0xfe/hook",
        "http://167772161/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http://no-such-host.invalid/hook",
        "not a url",
    ],
)
def test_a_webhook_url_we_must_not_reach_is_a_400_naming_it(api, media_server, url):
    response = api.post("/v1/videos", json=seed_body(media_server, webhook_url=url))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "webhook_url"


def test_a_webhook_url_needs_a_secret_on_the_server(client, media_server):
    response = client.post(
        "/v1/videos", json=seed_body(media_server, webhook_url="http://127.0.0.1:9/hook")
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "webhook_url"


def test_a_client_webhook_url_is_told_and_verified_by_the_sdk(api, hooked, media_server):
    with receiver() as hook:
        created = api.post("/v1/videos", json=seed_body(media_server, webhook_url=hook.url))
        assert created.status_code == 200, created.text
        services = api.app.state.services  # type: ignore[attr-defined]
        job = services.store.get(created.json()["id"])
        cancel_job(services.store, job)
        sender = Dispatcher(
            hooked,
            Outbox(services.store.engine, clock=services.store.clock),
            checked=loopback_fetcher(hooked),
            trusted=loopback_fetcher(hooked),
        )
        assert sender.run_once() == 1
        (delivery,) = hook.wait_for(1)
    event = openai.OpenAI(api_key="unused").webhooks.unwrap(
        delivery.body, delivery.headers, secret=SECRET
    )
    assert event.type == "video.failed" and event.data.id == job.id
    (row,) = sender.outbox.of_job(job.id)
    assert row.checked and row.state == "delivered"
