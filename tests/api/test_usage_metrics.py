"""`GET /v1/usage` sums match the jobs made (own figures, everyone's with the admin key);
`/metrics` has the stage histograms, fetch failures and open streams."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from helpers import seed_body
from wanserve.jobs.model import owner_of
from wanserve.settings import Settings

A, B, ADMIN = "key-a", "key-b", "the-admin-key"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared settings with two keys and an admin key (the client and worker use them)."""
    return settings.model_copy(
        update={"api_keys": [A, B], "admin_key": Settings(admin_key=ADMIN).admin_key}
    )


def make(client, media_server: str, key: str, **fields: object) -> str:
    answer = client.post("/v1/videos", json=seed_body(media_server, **fields), headers=auth(key))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def wait_all(client, worker, ids: dict[str, str]) -> None:
    for video_id, key in ids.items():
        for _ in range(1200):
            if client.get(f"/v1/videos/{video_id}", headers=auth(key)).json()["status"] in (
                "completed",
                "failed",
            ):
                break
            worker.stopping.wait(0.1)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_usage_sums_match_the_jobs_made_and_metrics_see_every_stage(
    client, worker, media_server
):
    ids = {
        make(client, media_server, A): A,
        make(client, media_server, A, seconds="3"): A,
        make(client, media_server, B, size="1280x720"): B,
    }
    cancelled = make(client, media_server, B)
    client.post(f"/v1/videos/{cancelled}/cancel", headers=auth(B))
    wait_all(client, worker, ids)
    videos = {i: client.get(f"/v1/videos/{i}", headers=auth(k)).json() for i, k in ids.items()}
    assert {v["status"] for v in videos.values()} == {"completed"}
    today = dt.datetime.now(dt.UTC).date().isoformat()

    mine = client.get("/v1/usage", headers=auth(A)).json()
    assert mine["total_videos"] == 2
    assert mine["total_seconds"] == pytest.approx(5.0, abs=0.1)
    assert {(e["owner_id"], e["model"], e["size"], e["date"]) for e in mine["data"]} == {
        (owner_of(A), "wan2.7-i2v", "720P", today)
    }
    everyone = client.get("/v1/usage", headers=auth(ADMIN)).json()
    assert everyone["total_videos"] == 3
    assert everyone["total_seconds"] == pytest.approx(7.0, abs=0.15)
    assert {e["size"] for e in everyone["data"]} == {"720P", "1280x720"}
    only_b = client.get(f"/v1/usage?owner_id={owner_of(B)}", headers=auth(ADMIN)).json()
    assert only_b["total_videos"] == 1
    # Deleting a job does not unmake its video; a date range outside it is empty.
    first = next(iter(ids))
    assert client.delete(f"/v1/videos/{first}", headers=auth(A)).status_code == 200
    assert client.get("/v1/usage", headers=auth(A)).json()["total_videos"] == 2
    assert client.get("/v1/usage?end_date=2000-01-01", headers=auth(A)).json()["data"] == []

    text = client.get("/metrics").text
    for stage in ("queue_wait", "generate", "encode", "store"):
        assert metric(text, f'wanserve_stage_seconds_count{{stage="{stage}"}}') == 3
    assert metric(text, 'wanserve_stage_seconds_bucket{le="+Inf",stage="generate"}') == 3
    assert metric(text, "wanserve_fetch_seconds_count") == 8  # two frames per create
    assert metric(text, "wanserve_event_streams") == 0


def test_usage_needs_a_key_and_refuses_what_it_cannot_read(client, media_server):
    assert client.get("/v1/usage").status_code == 401
    assert client.get("/v1/usage", headers=auth("wrong")).status_code == 401
    other = client.get(f"/v1/usage?owner_id={owner_of(B)}", headers=auth(A))
    assert other.status_code == 400 and other.json()["error"]["param"] == "owner_id"
    bad = client.get("/v1/usage?start_date=yesterday", headers=auth(A))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "start_date"
    assert client.get("/v1/usage", headers=auth(A)).json() == {
        "object": "list",
        "data": [],
        "total_seconds": 0.0,
        "total_videos": 0,
    }


def test_fetch_failures_are_counted_by_reason(client, media_server):
    body = seed_body(media_server)
    body["media"][0]["url"] = "http://10.1.2.3/a.png"  # type: ignore[index]
    assert client.post("/v1/videos", json=body, headers=auth(A)).status_code == 400
    body["media"][0]["url"] = f"{media_server}/no-such.png"  # type: ignore[index]
    assert client.post("/v1/videos", json=body, headers=auth(A)).status_code == 400
    text = client.get("/metrics").text
    assert metric(text, 'wanserve_fetch_failures_total{reason="media_url_forbidden"}') == 1
    assert metric(text, 'wanserve_fetch_failures_total{reason="media_fetch_failed"}') == 1
