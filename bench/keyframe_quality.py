"""In-between quality of the keyframe engine's interpolator against ground truth.

Run: .venv/bin/python bench/keyframe_quality.py [--frames 25] [--width 640] [--height 360]

Clips with known motion are built from photos shipped with scikit-image: a horizontal
pan, a zoom, a rotation, and an object moving over a still background. Each method gets
only the first and the last frame and makes the frames between; every in-between is
scored against the truth (PSNR, SSIM). Baselines in the same run: a linear crossfade and
FFmpeg's `minterpolate` in motion-compensated mode (through PyAV's libavfilter).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from fractions import Fraction

import av
import cv2
import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from wanserve.engines.keyframe import choose_motion

MINTERPOLATE = "mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1:scd=none:search_param=128"
Clip = list[np.ndarray]
Method = Callable[[np.ndarray, np.ndarray, int], Clip]


def _warp(source: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`source` seen through an affine camera `matrix` (source -> output pixels)."""
    return np.asarray(cv2.warpAffine(source, matrix[:2], size, flags=cv2.INTER_CUBIC))


def _similarity(center: tuple[float, float], angle: float, scale: float, shift=(0.0, 0.0)):
    """3x3 matrix: rotate/scale about `center` then shift, as output = M @ source."""
    matrix = np.eye(3)
    matrix[:2] = cv2.getRotationMatrix2D(center, angle, scale)
    matrix[:2, 2] += shift
    return matrix


def pan_clip(frames: int, size: tuple[int, int]) -> Clip:
    """The camera pans right over the coffee photo by 18% of the frame width."""
    width, height = size
    source = cv2.resize(data.coffee(), None, fx=1.4, fy=1.4, interpolation=cv2.INTER_CUBIC)
    travel = 0.18 * width
    top = (source.shape[0] - height) / 2
    return [
        _warp(source, _similarity((0, 0), 0, 1, (-20 - travel * i / (frames - 1), -top)), size)
        for i in range(frames)
    ]


def zoom_clip(frames: int, size: tuple[int, int]) -> Clip:
    """The camera pushes in 1.35x on the rocket at a steady (geometric) rate."""
    width, height = size
    source = cv2.resize(data.rocket(), None, fx=1.2, fy=1.2, interpolation=cv2.INTER_CUBIC)
    center = (source.shape[1] / 2, source.shape[0] / 2)
    shift = (width / 2 - center[0], height / 2 - center[1])
    return [
        _warp(source, _similarity(center, 0, 1.35 ** (i / (frames - 1)), shift), size)
        for i in range(frames)
    ]


def rotation_clip(frames: int, size: tuple[int, int]) -> Clip:
    """The camera rolls 10 degrees about the astronaut's centre."""
    width, height = size
    source = cv2.resize(data.astronaut(), None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)
    center = (source.shape[1] / 2, source.shape[0] / 2 - 60)
    shift = (width / 2 - center[0], height / 2 - center[1])
    return [
        _warp(source, _similarity(center, 10 * i / (frames - 1), 1.0, shift), size)
        for i in range(frames)
    ]


def object_clip(frames: int, size: tuple[int, int]) -> Clip:
    """A round cut-out of the cat crosses the still coffee photo (15% of the width)."""
    width, height = size
    background = cv2.resize(data.coffee(), size, interpolation=cv2.INTER_AREA)
    cat = data.chelsea()[30:230, 90:290]
    sprite = cv2.resize(cat, (120, 120), interpolation=cv2.INTER_AREA).astype(np.float32)
    yy, xx = np.mgrid[0:120, 0:120]
    alpha = np.clip(58.0 - np.hypot(xx - 59.5, yy - 59.5), 0, 1)[..., None].astype(np.float32)
    clip = []
    for i in range(frames):
        t = i / (frames - 1)
        shift = (0.25 * width + 0.15 * width * t, 0.3 * height + 0.1 * height * t)
        place = np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]]])
        layer = cv2.warpAffine(sprite, place, size, flags=cv2.INTER_LINEAR)
        mask = cv2.warpAffine(alpha, place, size, flags=cv2.INTER_LINEAR)[..., None]
        frame = background.astype(np.float32) * (1 - mask) + layer * mask
        clip.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return clip


def flow_method(first: np.ndarray, last: np.ndarray, frames: int) -> Clip:
    """The keyframe engine's motion (layers, flow or fallback, as the engine chooses)."""
    motion, _ = choose_motion(first, last, work_width=640, seed=0)
    return [motion.frame_at(i / (frames - 1)) for i in range(frames)]


def crossfade_method(first: np.ndarray, last: np.ndarray, frames: int) -> Clip:
    """Linear dissolve: what a plain transition gives."""
    a, b = first.astype(np.float32), last.astype(np.float32)
    return [
        np.clip(a + (b - a) * (i / (frames - 1)) + 0.5, 0, 255).astype(np.uint8)
        for i in range(frames)
    ]


def minterpolate_method(first: np.ndarray, last: np.ndarray, frames: int) -> Clip:
    """FFmpeg minterpolate (MINTERPOLATE options) from two frames one second apart."""
    height, width = first.shape[:2]
    graph = av.filter.Graph()
    source = graph.add_buffer(width=width, height=height, format="yuv444p", time_base=Fraction(1))
    # search_param=128 (default 32) lets it follow the larger motions of these clips.
    options = f"fps={frames - 1}:{MINTERPOLATE}"
    interpolate = graph.add("minterpolate", options)
    sink = graph.add("buffersink")
    source.link_to(interpolate)
    interpolate.link_to(sink)
    graph.configure()
    out: dict[int, np.ndarray] = {}
    # A third copy of the last frame lets the filter emit everything up to the last one.
    for pts, image in enumerate([first, last, last]):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv444p")
        frame.pts, frame.time_base = pts, Fraction(1)
        graph.vpush(frame)
        _drain(graph, out)
    graph.vpush(None)
    _drain(graph, out)
    return [out.get(i, last) for i in range(frames)]


def _drain(graph: av.filter.Graph, out: dict[int, np.ndarray]) -> None:
    while True:
        try:
            frame = graph.vpull()
        except (av.BlockingIOError, av.EOFError):
            return
        if frame.pts is not None:
            out[int(frame.pts)] = frame.to_ndarray(format="rgb24")


def score(truth: Clip, made: Clip) -> tuple[float, float]:
    """Mean PSNR and SSIM over the in-between frames (the two ends are given, not made)."""
    pairs = list(zip(truth[1:-1], made[1:-1], strict=True))
    psnr = [peak_signal_noise_ratio(t, m, data_range=255) for t, m in pairs]
    ssim = [structural_similarity(t, m, channel_axis=2, data_range=255) for t, m in pairs]
    return float(np.mean(psnr)), float(np.mean(ssim))


CLIPS: dict[str, Callable[[int, tuple[int, int]], Clip]] = {
    "pan": pan_clip,
    "zoom": zoom_clip,
    "rotation": rotation_clip,
    "object": object_clip,
}
METHODS: dict[str, Method] = {
    "flow (keyframe)": flow_method,
    "crossfade": crossfade_method,
    "minterpolate mci": minterpolate_method,
}


def main() -> None:
    """Build every clip, run every method, print one table per motion and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()
    size = (args.width, args.height)
    summary = []
    for motion, make in CLIPS.items():
        truth = make(args.frames, size)
        print(f"\n## {motion} ({args.frames} frames, {size[0]}x{size[1]})")
        print(f"{'method':<18} {'PSNR dB':>8} {'SSIM':>7} {'ms/clip':>8}")
        results = {}
        for name, method in METHODS.items():
            start = time.perf_counter()
            made = method(truth[0], truth[-1], args.frames)
            elapsed = (time.perf_counter() - start) * 1000
            results[name] = score(truth, made)
            print(f"{name:<18} {results[name][0]:>8.2f} {results[name][1]:>7.4f} {elapsed:>8.0f}")
        ours = results["flow (keyframe)"][0]
        gains = {name: ours - psnr for name, (psnr, _) in results.items() if name[:4] != "flow"}
        print("gain: " + ", ".join(f"+{gain:.2f} dB over {name}" for name, gain in gains.items()))
        summary.append((motion, gains))
    print("\n## target: at least +4 dB over each baseline on every motion")
    for motion, gains in summary:
        verdict = "met" if min(gains.values()) >= 4.0 else "MISSED"
        print(f"{motion:<10} min gain {min(gains.values()):+.2f} dB  {verdict}")


if __name__ == "__main__":
    main()
