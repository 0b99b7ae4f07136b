"""`wanserve serve` with WANSERVE_LOG_FORMAT=json: every line of the API and its worker
process is JSON, the job's lines carry its id in both processes, start-up is quiet."""

from __future__ import annotations

import json

import httpx
import pytest
from e2e_helpers import KEY_A, wait_done

from helpers import seed_body

pytestmark = pytest.mark.slow


def test_json_lines_from_api_and_worker_name_the_job(server_factory, media_server):
    server = server_factory(workers=1, WANSERVE_LOG_FORMAT="json")
    created = httpx.post(
        f"{server.url}/v1/videos",
        headers={"Authorization": f"Bearer {KEY_A}", "X-Request-Id": "e2e-request"},
        json=seed_body(media_server),
    )
    assert created.headers["x-request-id"] == "e2e-request"
    video_id = created.json()["id"]
    assert wait_done(server.url, video_id)["status"] == "completed"
    # The worker process's stage timings reach the API's /metrics through the store.
    metrics = httpx.get(f"{server.url}/metrics").text
    for stage in ("queue_wait", "generate", "encode", "store"):
        assert f'wanserve_stage_seconds_count{{stage="{stage}"}} 1.0' in metrics
    server.stop()
    port = server.url.rsplit(":", 1)[1]
    text = (server.data_dir.parent / f"server-{port}.log").read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # each one parses
    assert not any(line["logger"].startswith("alembic") for line in lines)
    assert KEY_A not in text
    about = [line for line in lines if video_id in line["message"]]
    assert {line.get("job_id") for line in about} == {video_id}
    processes = {line["process"] for line in about}
    assert "MainProcess" in processes and any("worker" in name for name in processes)
    queued = next(line for line in about if "queued" in line["message"])
    assert queued["request_id"] == "e2e-request" and len(queued["owner_id"]) == 32
