"""Continuing a clip on the keyframe engine, through the API and a worker: the seam, the
length and the sound of each part."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from helpers import clip_bytes, completed_video, pan_frames

pytestmark = pytest.mark.slow
STEP = 4  # pixels the clip's camera pans a frame
CLIP_FRAMES = 72  # 3 s at 24 fps


def _decoded(content: bytes) -> tuple[list[np.ndarray], float, np.ndarray | None]:
    with av.open(io.BytesIO(content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        rate = float(container.streams.video[0].average_rate)
    with av.open(io.BytesIO(content)) as container:
        if not container.streams.audio:
            return frames, rate, None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=8000)
        samples = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
    return frames, rate, np.concatenate(samples)


def _loudness(samples: np.ndarray, start: float, end: float) -> float:
    part = samples[int(start * 8000) : int(end * 8000)]
    return float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))


@pytest.fixture
def pan_clip(media_dir: Path) -> list[np.ndarray]:
    frames = pan_frames(CLIP_FRAMES + 40, step=STEP)
    (media_dir / "pan-sound.mp4").write_bytes(clip_bytes(frames[:CLIP_FRAMES], audio_freq=440))
    (media_dir / "pan-mute.mp4").write_bytes(clip_bytes(frames[:CLIP_FRAMES]))
    Image.fromarray(frames[CLIP_FRAMES + 30]).save(media_dir / "pan-target.png")
    return frames


def _create(client, media: list[dict[str, str]]) -> dict:
    body = {"model": "wan2.7-i2v", "seconds": "2", "size": "480x360", "media": media}
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_without_a_last_frame_the_camera_glides_on(client, worker, media_server, pan_clip):
    created = _create(client, [{"type": "first_clip", "url": f"{media_server}/pan-sound.mp4"}])
    video = completed_video(client, created["id"])
    assert video["seconds"] == "2" and video["metadata"]["source_seconds"] == 3.0
    frames, rate, sound = _decoded(client.get(f"/v1/videos/{created['id']}/content").content)
    # Length: the source's 3 s and the new 2 s, within a frame.
    assert abs(len(frames) / rate - 5.0) <= 1 / rate
    clip_last, first_new = frames[CLIP_FRAMES - 1], frames[CLIP_FRAMES]
    assert peak_signal_noise_ratio(pan_clip[CLIP_FRAMES - 1], clip_last) > 30  # the clip itself
    # The first new frame is the next step of the pan, not the last frame held.
    truth = pan_clip[CLIP_FRAMES]
    moved = peak_signal_noise_ratio(truth, first_new)
    held = peak_signal_noise_ratio(truth, clip_last)
    assert moved > held + 3, (moved, held)
    # ...and it comes to rest: the last frames no longer move.
    assert peak_signal_noise_ratio(frames[-2], frames[-1]) > 40
    # The clip's own sound stays under the clip; the new part has none.
    assert sound is not None
    assert _loudness(sound, 0.2, 2.8) > 0.1
    assert _loudness(sound, 3.3, 4.9) < 0.01


def test_with_a_last_frame_the_morph_starts_on_the_clips_end(
    client, worker, media_server, pan_clip
):
    created = _create(
        client,
        [
            {"type": "first_clip", "url": f"{media_server}/pan-mute.mp4"},
            {"type": "last_frame", "url": f"{media_server}/pan-target.png"},
            {"type": "driving_audio", "url": f"{media_server}/audio.wav"},
        ],
    )
    video = completed_video(client, created["id"])
    assert video["seconds"] == "2"
    frames, rate, sound = _decoded(client.get(f"/v1/videos/{created['id']}/content").content)
    assert abs(len(frames) / rate - 5.0) <= 1 / rate
    clip_last, first_new = frames[CLIP_FRAMES - 1], frames[CLIP_FRAMES]
    target = pan_clip[CLIP_FRAMES + 30]
    crossfade = ((clip_last.astype(np.float64) + target) / 2).round().astype(np.uint8)
    seam = peak_signal_noise_ratio(clip_last, first_new)
    faded = peak_signal_noise_ratio(clip_last, crossfade)
    assert seam > faded + 6, (seam, faded)
    assert peak_signal_noise_ratio(target, frames[-1]) > 25  # it arrives at the last frame
    # Silence under the (mute) clip, the driving audio under the new part.
    assert sound is not None
    assert _loudness(sound, 0.2, 2.8) < 0.01
    assert _loudness(sound, 3.2, 4.8) > 0.1
