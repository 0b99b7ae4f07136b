"""Per-key create limits: token bucket (429 + Retry-After) and the unfinished-job cap."""

from __future__ import annotations

import threading

import openai
import pytest
from fastapi.testclient import TestClient

from helpers import seed_body
from wanserve.api.app import create_app
from wanserve.api.quota import CreateQuota, TokenBucket
from wanserve.errors import RateLimited


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingStore:
    def __init__(self, unfinished: int) -> None:
        self.unfinished = unfinished
        self.calls = 0

    def count_unfinished(self, owner: str) -> int:
        self.calls += 1
        return self.unfinished


def test_bucket_grants_a_burst_then_refills_at_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(0.5)
    assert bucket.take("b") == 0.0  # another owner has its own bucket
    clock.now += 0.5
    assert bucket.take("a") == 0.0
    clock.now += 100
    assert [bucket.take("a") for _ in range(4)][-1] == pytest.approx(0.5)  # capped at burst


def test_bucket_is_thread_safe():
    bucket = TokenBucket(rate=1e-9, burst=50, clock=FakeClock())
    granted: list[float] = []

    def hammer() -> None:
        for _ in range(20):
            granted.append(bucket.take("a"))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(0.0) == 50


def test_quota_refuses_over_rate_with_retry_after_and_skips_the_count():
    store = CountingStore(0)
    quota = CreateQuota(store, rate=1.0, burst=1, max_unfinished=5, clock=FakeClock())  # type: ignore[arg-type]
    quota.check("a")
    with pytest.raises(RateLimited) as refused:
        quota.check("a")
    assert refused.value.retry_after == pytest.approx(1.0)
    assert refused.value.code == "rate_limit_exceeded"
    assert store.calls == 1


def test_quota_caps_unfinished_jobs_and_zero_turns_limits_off():
    full = CreateQuota(CountingStore(3), rate=0, burst=0, max_unfinished=3)  # type: ignore[arg-type]
    with pytest.raises(RateLimited) as refused:
        full.check("a")
    assert refused.value.code == "too_many_unfinished_jobs"
    off = CreateQuota(CountingStore(10**6), rate=0, burst=0, max_unfinished=0)  # type: ignore[arg-type]
    for _ in range(100):
        off.check("a")


def test_create_over_rate_is_429_with_retry_after_per_key(settings, media_server):
    settings = settings.model_copy(
        update={"create_rate": 0.001, "create_burst": 2, "api_keys": ["k1", "k2"]}
    )
    with TestClient(create_app(settings, workers=0)) as client:
        k1 = {"Authorization": "Bearer k1"}
        for _ in range(2):
            assert client.post("/v1/videos", json=seed_body(media_server), headers=k1).is_success
        refused = client.post("/v1/videos", json=seed_body(media_server), headers=k1)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
        other = client.post(
            "/v1/videos", json=seed_body(media_server), headers={"Authorization": "Bearer k2"}
        )
        assert other.status_code == 200
        # A wrong key is told so, not rate limited.
        wrong = client.post(
            "/v1/videos", json=seed_body(media_server), headers={"Authorization": "Bearer x"}
        )
        assert wrong.status_code == 401


def test_unfinished_cap_is_429_until_a_job_is_cancelled(settings, media_server):
    settings = settings.model_copy(update={"max_unfinished_jobs": 2})
    with TestClient(create_app(settings, workers=0)) as client:
        ids = [client.post("/v1/videos", json=seed_body(media_server)).json()["id"] for _ in "ab"]
        refused = client.post("/v1/videos", json=seed_body(media_server))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_unfinished_jobs"
        assert client.post(f"/v1/videos/{ids[0]}/cancel").status_code == 200
        assert client.post("/v1/videos", json=seed_body(media_server)).status_code == 200


def test_openai_sdk_retries_after_429(settings, media_server):
    """The SDK honours Retry-After: the second create waits a second and goes through."""
    settings = settings.model_copy(update={"create_rate": 1.0, "create_burst": 1})
    with TestClient(create_app(settings, workers=0)) as test_client:
        sdk = openai.OpenAI(
            api_key="none", base_url=f"{test_client.base_url}/v1", http_client=test_client
        )
        media = seed_body(media_server)["media"]
        ids = {
            sdk.videos.create(model="wan2.7-i2v", prompt="p", extra_body={"media": media}).id
            for _ in range(2)
        }
        assert len(ids) == 2
