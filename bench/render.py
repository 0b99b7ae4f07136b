"""End-to-end render speed of the keyframe engine: 5 s at 720P and 1080P into an MP4.

Run: .venv/bin/python bench/render.py [--seconds 5] [--presets veryfast,ultrafast]
     [--scene pan|object]

For each size the engine gets a first and a last frame made from a scikit-image photo
(`pan`: a camera pan with a slight zoom; `object`: a cat crop travelling over a still
photo, the layered in-betweening) and its stream goes through the real render pipeline
(`render_frame_stream`: H.264 encode, thumbnail, spritesheet). Rows per preset:
  keyframe  engine set-up + frames + encode, wall seconds
  frames    the engine alone (frames made and dropped), to split the cost
  crossfade a plain dissolve through the same encoder: the baseline
`x realtime` is wall time / video length: at most 1 is real time, at most 2 half of it.
`cpu s` is the process's CPU time (all threads, x264's included): on a shared machine the
wall time depends on the neighbours, and cpu s / cores is what an idle machine would need.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from skimage import data

from wanserve.engines.base import FrameStream, GenerationRequest, MediaInput
from wanserve.engines.keyframe import FPS, KeyframeEngine
from wanserve.render.pipeline import render_frame_stream

SIZES = {"720P": (1280, 720), "1080P": (1920, 1080)}


class BenchContext:
    """The least an EngineContext must do: never cancelled, progress ignored."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir

    def report_progress(self, fraction: float) -> None:
        """Ignored."""

    def raise_if_cancelled(self) -> None:
        """Never cancelled."""

    @property
    def state(self) -> Mapping[str, Any]:
        """No saved state."""
        return {}

    def save_state(self, state: Mapping[str, Any]) -> None:
        """Not kept."""


def make_inputs(folder: Path, size: tuple[int, int]) -> tuple[Path, Path]:
    """First and last frame: the astronaut seen by a camera that pans and zooms in a little."""
    width, height = size
    scale = 1.25 * width / 512
    photo = cv2.resize(data.astronaut(), None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    paths = []
    for name, (dx, zoom) in (("first.png", (0.0, 1.0)), ("last.png", (0.08 * width, 1.06))):
        matrix = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), 0, zoom)
        matrix[:, 2] -= ((photo.shape[1] - width) / 2 + dx, (photo.shape[0] - height) / 2)
        view = cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_CUBIC)
        paths.append(folder / name)
        Image.fromarray(view).save(paths[-1])
    return paths[0], paths[1]


def make_object_inputs(folder: Path, size: tuple[int, int]) -> tuple[Path, Path]:
    """First and last frame: the issue's cat (a photo crop, 300x200 at 720P) pasted over the
    coffee photo at the left, then 750 px right and 250 px up (scaled with the size)."""
    scale = size[0] / 1280
    background = cv2.resize(data.coffee(), size, interpolation=cv2.INTER_AREA)
    sprite = (round(300 * scale), round(200 * scale))
    cat = cv2.resize(data.chelsea()[20:280, 60:420], sprite, interpolation=cv2.INTER_AREA)
    paths = []
    for name, (x, y) in (("first.png", (50, 450)), ("last.png", (800, 200))):
        left, top = round(x * scale), round(y * scale)
        view = background.copy()
        view[top : top + sprite[1], left : left + sprite[0]] = cat
        paths.append(folder / name)
        Image.fromarray(view).save(paths[-1])
    return paths[0], paths[1]


SCENES = {"pan": make_inputs, "object": make_object_inputs}


def request_for(first: Path, last: Path, size: tuple[int, int], seconds: int) -> GenerationRequest:
    """A keyframe request for the two inputs at `size`."""
    return GenerationRequest(
        job_id="video_bench",
        model="wan2.7-i2v",
        prompt="",
        negative_prompt="",
        first_frame=MediaInput(first, "image/png"),
        last_frame=MediaInput(last, "image/png"),
        driving_audio=None,
        width=size[0],
        height=size[1],
        seconds=seconds,
        seed=1,
    )


def crossfade(first: np.ndarray, last: np.ndarray, count: int) -> Iterator[np.ndarray]:
    """The baseline: a linear dissolve, made lazily like the engine's frames."""
    for index in range(count):
        mix = index / max(1, count - 1)
        yield np.asarray(cv2.addWeighted(first, 1.0 - mix, last, mix, 0.0))


def timed_render(make_stream: Any, folder: Path, seconds: int, preset: str) -> tuple[float, float]:
    """Wall and CPU seconds from asking for the stream to the finished MP4 and previews."""
    start, cpu = time.perf_counter(), time.process_time()
    stream = make_stream()
    render_frame_stream(
        stream,
        out_dir=folder / f"out-{preset}-{time.monotonic_ns()}",
        audio_path=None,
        watermark=False,
        duration=seconds,
        preset=preset,
    )
    return time.perf_counter() - start, time.process_time() - cpu


def run_size(
    label: str, size: tuple[int, int], seconds: int, presets: list[str], scene: str
) -> None:
    """Print the rows of one output size."""
    engine = KeyframeEngine()
    count = seconds * FPS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        first, last = SCENES[scene](folder, size)
        request = request_for(first, last, size, seconds)
        context = BenchContext(folder)
        start, cpu = time.perf_counter(), time.process_time()
        stream = engine.generate(request, context)
        setup = time.perf_counter() - start
        for _ in stream.frames:
            pass
        rows = [("frames", "-", (time.perf_counter() - start, time.process_time() - cpu))]
        images = [np.asarray(Image.open(p).convert("RGB")) for p in (first, last)]
        for preset in presets:
            wall = timed_render(lambda: engine.generate(request, context), folder, seconds, preset)
            rows.append(("keyframe", preset, wall))

            def baseline() -> FrameStream:
                return FrameStream(fps=FPS, frame_count=count, frames=crossfade(*images, count))

            rows.append(("crossfade", preset, timed_render(baseline, folder, seconds, preset)))
    print(f"\n## {label} {size[0]}x{size[1]}, {count} frames ({seconds} s at {FPS} fps)")
    print(f"engine set-up (load, motion estimate): {setup:.2f} s; {stream.metadata}")
    print(f"{'method':10} {'preset':10} {'seconds':>8} {'fps':>7} {'x realtime':>10} {'cpu s':>7}")
    for method, preset, (wall, cpu) in rows:
        print(
            f"{method:10} {preset:10} {wall:>8.2f} {count / wall:>7.1f} "
            f"{wall / seconds:>10.2f} {cpu:>7.2f}"
        )


def main() -> None:
    """Run every size and print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--presets", default="veryfast,ultrafast")
    parser.add_argument("--scene", choices=sorted(SCENES), default="pan")
    args = parser.parse_args()
    presets = [p for p in args.presets.split(",") if p]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, OpenCV threads {cv2.getNumThreads()}, load average {load}")
    for label, size in SIZES.items():
        run_size(label, size, args.seconds, presets, args.scene)


if __name__ == "__main__":
    main()
