"""Through the API, the keyframe engine's middle frame is real motion, not a dissolve."""

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


def crop(shift: int) -> np.ndarray:
    return data.coffee()[20:380, shift : shift + 480]


def test_middle_frame_beats_a_crossfade(client, worker, media_dir, media_server):
    Image.fromarray(crop(0)).save(media_dir / "pan-first.png")
    Image.fromarray(crop(PAN)).save(media_dir / "pan-last.png")
    body = {
        "model": "wan2.7-i2v",
        "seconds": "2",
        "size": "480x360",
        "media": [
            {"type": "first_frame", "url": f"{media_server}/pan-first.png"},
            {"type": "last_frame", "url": f"{media_server}/pan-last.png"},
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
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    middle = len(frames) // 2
    t = float(paced_times(len(frames))[middle])
    truth = crop(round(PAN * t))
    crossfade = ((1 - t) * crop(0) + t * crop(PAN)).round().astype(np.uint8)
    engine_psnr = peak_signal_noise_ratio(truth, frames[middle])
    crossfade_psnr = peak_signal_noise_ratio(truth, crossfade)
    assert engine_psnr > crossfade_psnr + 4, (engine_psnr, crossfade_psnr)
