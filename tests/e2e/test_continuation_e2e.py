"""Continuation against the real server process: curl uploading a clip to
/v1/videos/extensions, and a first_clip on POST /v1/videos."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import av
import httpx
import pytest
from dashscope.v2 import Client
from e2e_helpers import KEY_A, wait_done

from helpers import clip_bytes, pan_frames

pytestmark = pytest.mark.slow

AUTH_A = {"Authorization": f"Bearer {KEY_A}"}


def _length(content: bytes) -> tuple[float, float, bool]:
    with av.open(io.BytesIO(content)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate)
        count = sum(1 for _ in container.decode(stream))
        return count / rate, rate, bool(container.streams.audio)


def test_curl_uploads_a_clip_to_extend(server_factory, tmp_path: Path):
    server = server_factory()
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(clip_bytes(pan_frames(60), audio_freq=440))  # 2.5 s with sound
    answer = subprocess.run(
        [
            "curl",
            "-sS",
            f"{server.url}/v1/videos/extensions",
            "-H",
            f"Authorization: Bearer {KEY_A}",
            "-F",
            f"video=@{clip};type=video/mp4",
            "-F",
            "prompt=the camera drifts on",
            "-F",
            "seconds=3",
            "-F",
            "size=480x360",
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    created = json.loads(answer.stdout)
    assert created["status"] == "queued", created
    assert created["seconds"] == "3" and created["metadata"]["source_seconds"] == 2.5
    video = wait_done(server.url, created["id"])
    assert video["status"] == "completed", video
    seconds, rate, sound = _length(httpx.get(video["video_url"], headers=AUTH_A).content)
    assert abs(seconds - 5.5) <= 1 / rate
    assert sound  # the clip's own track, under the clip


def test_dashscope_sdk_continues_a_first_clip(server_factory, media_server, media_dir):
    server = server_factory()
    (media_dir / "sdk-clip.mp4").write_bytes(clip_bytes(pan_frames(72)))  # 3 s, no sound
    client = Client(api_key=KEY_A, base_url=f"{server.url}/api/v1")
    job = client.videos.jobs.create(
        model="wan2.7-i2v",
        prompt="the camera keeps going",
        media=[
            {"type": "first_clip", "url": f"{media_server}/sdk-clip.mp4"},
            {"type": "driving_audio", "url": f"{media_server}/audio.wav"},
        ],
        resolution="720P",
        duration=5,
    )
    done = client.videos.jobs.wait(job, poll_interval=0.2, max_interval=0.5, timeout=120)
    assert done.succeeded and done.video_url, done
    task = httpx.get(f"{server.url}/api/v1/tasks/{job.task_id}", headers=AUTH_A).json()
    assert task["usage"]["video_duration"] == 5  # the whole video, as DashScope counts
    video = httpx.get(f"{server.url}/v1/videos/{job.task_id}", headers=AUTH_A).json()
    assert video["seconds"] == "2" and video["metadata"]["source_seconds"] == 3.0
    seconds, rate, sound = _length(httpx.get(done.video_url, headers=AUTH_A).content)
    assert abs(seconds - 5.0) <= 1 / rate
    assert sound  # the driving audio, under the new part
