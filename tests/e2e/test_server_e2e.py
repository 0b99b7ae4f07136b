"""The real server process, driven by curl, the openai SDK and httpx."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import av
import httpx
import openai
import pytest
from e2e_helpers import KEY_A, KEY_B, wait_done

from helpers import seed_body

pytestmark = pytest.mark.slow

AUTH_A = {"Authorization": f"Bearer {KEY_A}"}


def submit(server, media_server: str, **fields: object) -> str:
    """Create a job from the seed's body (with `fields`) as key A; its id."""
    response = httpx.post(
        f"{server.url}/v1/videos", headers=AUTH_A, json=seed_body(media_server, **fields)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_seed_curl_request_to_decoded_mp4(server_factory, media_server):
    server = server_factory()
    body = json.dumps(seed_body(media_server, audio=True, size="1080P"))
    answer = subprocess.run(
        [
            "curl",
            "-sS",
            "--request",
            "POST",
            "--url",
            f"{server.url}/v1/videos",
            "--header",
            f"Authorization: Bearer {KEY_A}",
            "--header",
            "Content-Type: application/json",
            "--data",
            body,
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    created = json.loads(answer.stdout)
    assert created["object"] == "video" and created["status"] == "queued"
    assert created["model"] == "wan2.7-i2v" and created["engine"] == "keyframe"
    video = wait_done(server.url, created["id"])
    assert video["status"] == "completed", video
    content = httpx.get(video["video_url"], headers=AUTH_A).content
    with av.open(io.BytesIO(content)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (1920, 1080)
        assert abs(float(container.duration / 1_000_000) - 2.0) <= 1 / 24 + 0.05
        assert container.streams.audio


def test_openai_sdk_create_retrieve_list_download_delete(server_factory, media_server):
    server = server_factory()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY_A)
    media = seed_body(media_server)["media"]
    video = client.videos.create(
        model="wan2.7-i2v",
        prompt="a cat",
        seconds="2",
        size="720P",
        extra_body={"media": media, "seed": 7, "watermark": True},
    )
    assert video.status == "queued"
    for _ in range(600):
        video = client.videos.retrieve(video.id)
        if video.status in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert video.status == "completed", video
    assert video.seconds == "2" and video.size == "720P"
    assert video.model_extra["seed"] == 7
    listing = client.videos.list()
    assert [v.id for v in listing.data] == [video.id]
    content = client.videos.download_content(video.id)
    assert content.content[4:8] == b"ftyp"
    thumbnail = client.videos.download_content(video.id, variant="thumbnail")
    assert thumbnail.content[:4] == b"RIFF"
    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)


def test_openai_sdk_upload_as_input_reference(server_factory, media_server, media_dir):
    server = server_factory()
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY_A)
    last = seed_body(media_server)["media"][1]
    video = client.videos.create(
        model="wan2.7-i2v",
        prompt="upload",
        seconds="2",
        size="720P",
        input_reference=(media_dir / "wide-first.png").open("rb"),
        extra_body={"media": [last]},
    )
    assert wait_done(server.url, video.id)["status"] == "completed"


def test_errors_and_keys_through_the_sdk(server_factory, media_server):
    server = server_factory()
    a = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY_A)
    b = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY_B)
    video = a.videos.create(
        model="wan2.7-i2v", prompt="mine", extra_body={"media": seed_body(media_server)["media"]}
    )
    with pytest.raises(openai.NotFoundError):
        b.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        b.videos.delete(video.id)
    assert b.videos.list().data == []
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).videos.list()
    with pytest.raises(openai.BadRequestError) as bad:
        a.videos.create(
            model="wan2.7-i2v",
            prompt="x",
            seconds="99",
            extra_body={"media": seed_body(media_server)["media"]},
        )
    assert bad.value.body["param"] == "seconds"
    unauthenticated = httpx.get(f"{server.url}/v1/videos")
    assert unauthenticated.status_code == 401 and "error" in unauthenticated.json()
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/videos"]["post"]


def test_restart_finishes_queued_and_interrupted_jobs(server_factory, media_server):
    server = server_factory(workers=1)
    ids = []
    for seconds in ("15", "2"):
        ids.append(submit(server, media_server, seconds=seconds, size="1080P"))
    deadline = time.monotonic() + 60
    while httpx.get(f"{server.url}/v1/videos/{ids[0]}", headers=AUTH_A).json()["progress"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (
        httpx.get(f"{server.url}/v1/videos/{ids[1]}", headers=AUTH_A).json()["status"] == "queued"
    )
    server.kill()
    server.restart()
    for video_id in ids:
        assert wait_done(server.url, video_id, timeout=240)["status"] == "completed"


def test_eight_jobs_two_workers_each_run_exactly_once(server_factory, media_server):
    server = server_factory(workers=2)
    ids = [submit(server, media_server, seconds="2") for _ in range(8)]
    for video_id in ids:
        assert wait_done(server.url, video_id)["status"] == "completed"
    with sqlite3.connect(server.data_dir / "wanserve.db") as db:
        rows = dict(db.execute("SELECT id, attempts FROM jobs").fetchall())
        workers = {w for (w,) in db.execute("SELECT DISTINCT worker_id FROM jobs")}
    assert rows == dict.fromkeys(ids, 1)
    assert len(workers) == 2


def test_api_stays_responsive_while_rendering_1080p(server_factory, media_server):
    server = server_factory(workers=1)
    video_id = submit(server, media_server, seconds="10", size="1080P")
    latencies = []
    while (
        httpx.get(f"{server.url}/v1/videos/{video_id}", headers=AUTH_A).json()["status"]
        != "in_progress"
    ):
        time.sleep(0.05)
    for _ in range(20):
        started = time.monotonic()
        response = httpx.get(f"{server.url}/v1/videos/{video_id}", headers=AUTH_A)
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200
        time.sleep(0.1)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.25, latencies
    assert latencies[-1] < 2.0, latencies


def _worker_pids(server_pid: int) -> list[int]:
    """Worker processes the server spawned (not multiprocessing's resource tracker)."""
    children = subprocess.run(
        ["pgrep", "-P", str(server_pid)], capture_output=True, text=True
    ).stdout.split()
    pids = []
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline:
            pids.append(int(pid))
    return pids


def test_a_killed_worker_is_replaced_and_its_job_finishes(server_factory, media_server):
    server = server_factory(workers=1)
    video_id = submit(server, media_server, seconds="10", size="1080P")
    url = f"{server.url}/v1/videos/{video_id}"
    deadline = time.monotonic() + 60
    while httpx.get(url, headers=AUTH_A).json()["progress"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (victim,) = _worker_pids(server.process.pid)
    os.kill(victim, signal.SIGKILL)
    video = wait_done(server.url, video_id, timeout=240)
    assert video["status"] == "completed", video
    assert video["progress"] == 100
    replacements = _worker_pids(server.process.pid)
    assert len(replacements) == 1 and victim not in replacements
    with sqlite3.connect(server.data_dir / "wanserve.db") as db:
        (attempts,) = db.execute("SELECT attempts FROM jobs WHERE id = ?", (video_id,)).fetchone()
    assert attempts == 2
