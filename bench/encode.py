"""Encode speed of the render pipeline: 5 s of synthetic 720P and 1080P at three x264 presets.

Run: .venv/bin/python bench/encode.py [--seconds 5] [--fps 24]
Prints, per size and preset, the wall seconds, frames per second, the ratio to real time
(encode time / video length; below 1 is faster than real time) and the ratio to the
ultrafast baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from wanserve.engines.base import FrameStream
from wanserve.render.pipeline import render_frame_stream

SIZES = {"720P": (1280, 720), "1080P": (1920, 1080)}
PRESETS = ("ultrafast", "veryfast", "medium")
POOL = 24  # distinct frames made up front, so frame synthesis does not count as encoding


def frame_pool(width: int, height: int) -> list[np.ndarray]:
    """Moving gradients with a little noise: more like real video than flat colour."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    frames = []
    for index in range(POOL):
        phase = index / POOL
        red = np.broadcast_to(128 + 100 * np.sin(6 * x + 2 * np.pi * phase), (height, width))
        green = np.broadcast_to(128 + 100 * np.cos(5 * y - 2 * np.pi * phase), (height, width))
        blue = 128 + 60 * np.sin(4 * (x + y) + 4 * np.pi * phase)
        image = np.stack([red, green, blue], axis=-1) + rng.normal(0, 6, (height, width, 3))
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def cycle(pool: list[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """`count` frames taken from the pool in order."""
    for index in range(count):
        yield pool[index % len(pool)]


def bench(pool: list[np.ndarray], count: int, fps: float, preset: str) -> float:
    """Seconds render_frame_stream takes for `count` frames (video, thumbnail, spritesheet)."""
    with tempfile.TemporaryDirectory() as out_dir:
        stream = FrameStream(fps=fps, frame_count=count, frames=cycle(pool, count))
        start = time.perf_counter()
        render_frame_stream(
            stream,
            out_dir=Path(out_dir),
            audio_path=None,
            watermark=False,
            duration=count / fps,
            preset=preset,
        )
        return time.perf_counter() - start


def main() -> None:
    """Run every size and preset once and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fps", type=float, default=24.0)
    args = parser.parse_args()
    count = round(args.seconds * args.fps)
    print(f"{os.cpu_count()} CPUs, {count} frames at {args.fps:g} fps ({args.seconds:g} s)")
    print(
        f"{'size':6} {'preset':10} {'seconds':>8} {'fps':>7} {'x realtime':>10} {'x ultrafast':>11}"
    )
    for label, (width, height) in SIZES.items():
        pool = frame_pool(width, height)
        baseline = None
        for preset in PRESETS:
            seconds = bench(pool, count, args.fps, preset)
            baseline = baseline or seconds
            print(
                f"{label:6} {preset:10} {seconds:8.2f} {count / seconds:7.1f} "
                f"{seconds / args.seconds:10.2f} {seconds / baseline:11.2f}"
            )


if __name__ == "__main__":
    main()
