"""Through the API, the keyframe engine's middle frame is real motion, not a dissolve:
for a camera pan, and for an object that travels far over a still scene."""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from wanserve.engines.pacing import paced_times

pytestmark = pytest.mark.slow
PAN = 120  # pixels the camera moves between the first and the last frame
CAT = (120, 80)
START, END = (20, 250), (330, 40)  # where the cat is in the first and the last frame


def crop(shift: int) -> np.ndarray:
    return data.coffee()[20:380, shift : shift + 480]


def cat_at(x: int, y: int) -> np.ndarray:
    """The cat's face (a 120x80 photo crop) pasted over the still coffee photo at (x, y)."""
    frame = crop(0).copy()
    face = np.asarray(Image.fromarray(data.chelsea()[20:280, 60:420]).resize(CAT))
    frame[y : y + CAT[1], x : x + CAT[0]] = face
    return frame


def render(client, media_dir, media_server, name: str, first, last) -> list[np.ndarray]:
    """The decoded frames of a 2 s 480x360 job from `first` to `last`."""
    Image.fromarray(first).save(media_dir / f"{name}-first.png")
    Image.fromarray(last).save(media_dir / f"{name}-last.png")
    body = {
        "model": "wan2.7-i2v",
        "seconds": "2",
        "size": "480x360",
        "media": [
            {"type": "first_frame", "url": f"{media_server}/{name}-first.png"},
            {"type": "last_frame", "url": f"{media_server}/{name}-last.png"},
        ],
    }
    created = client.post("/v1/videos", json=body).json()
    deadline = time.monotonic() + 120
    while (video := client.get(f"/v1/videos/{created['id']}").json())["status"] not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert video["status"] == "completed", video
    content = client.get(f"/v1/videos/{created['id']}/content").content
    with av.open(io.BytesIO(content)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_middle_frame_beats_a_crossfade(client, worker, media_dir, media_server):
    frames = render(client, media_dir, media_server, "pan", crop(0), crop(PAN))
    middle = len(frames) // 2
    t = float(paced_times(len(frames))[middle])
    truth = crop(round(PAN * t))
    crossfade = ((1 - t) * crop(0) + t * crop(PAN)).round().astype(np.uint8)
    engine_psnr = peak_signal_noise_ratio(truth, frames[middle])
    crossfade_psnr = peak_signal_noise_ratio(truth, crossfade)
    assert engine_psnr > crossfade_psnr + 4, (engine_psnr, crossfade_psnr)


def test_travelling_object_middle_frame_beats_a_crossfade(client, worker, media_dir, media_server):
    first, last = cat_at(*START), cat_at(*END)
    frames = render(client, media_dir, media_server, "cat", first, last)
    middle = len(frames) // 2
    t = float(paced_times(len(frames))[middle])
    truth = cat_at(*(round(a + (b - a) * t) for a, b in zip(START, END, strict=True)))
    crossfade = ((1 - t) * first + t * last).round().astype(np.uint8)
    engine_psnr = peak_signal_noise_ratio(truth, frames[middle])
    crossfade_psnr = peak_signal_noise_ratio(truth, crossfade)
    assert engine_psnr > crossfade_psnr + 4, (engine_psnr, crossfade_psnr)
