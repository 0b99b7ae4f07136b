"""In-between quality of the keyframe engine's interpolator against ground truth.

Run: .venv/bin/python bench/keyframe_quality.py [--frames 25] [--width 640] [--height 360]
     [--only pan,half,...]

Clips with known motion are built from photos shipped with scikit-image: a horizontal
pan, a zoom, a rotation, and an object moving over a still background; then objects
that travel far (photo crops with a soft elliptical edge over photo backgrounds): a
quarter, a half and the whole frame width, diagonal, two at once, one that grows, one
over a camera pan, one that turns 30 degrees, one that ends half out of the frame. Each
method gets only the first and the last frame and makes the frames between; every
in-between is scored against the truth (PSNR, SSIM) and, for the travelling objects, by
the share of in-betweens showing each object whole at its true place (NCC of its pixels
with the truth's >= 0.8).
Baselines in the same run: a linear crossfade and FFmpeg's `minterpolate` in
motion-compensated mode (through PyAV's libavfilter).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from wanserve.engines.flow import FlowInterpolator
from wanserve.engines.keyframe import choose_motion

WHOLE_NCC = 0.8  # an object "whole at its true place" correlates at least this well
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


@dataclass
class Mover:
    """A photo crop with a soft elliptical edge travelling across the clip.

    Positions are the sprite's centre as shares of the frame's width and height, at the
    first and the last frame; `grow` is its size at the end relative to the start, `turn`
    how far it has turned by then.
    """

    sprite: np.ndarray
    start: tuple[float, float]
    end: tuple[float, float]
    grow: float = 1.0
    turn: float = 0.0  # degrees turned by the end, anticlockwise on screen


def _sprite(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]):
    """A crop of `image` (top, bottom, left, right) at `size`, as float32."""
    top, bottom, left, right = box
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA).astype(np.float32)


def _ellipse(size: tuple[int, int]) -> np.ndarray:
    """Alpha of an ellipse filling `size`, with a one-pixel soft edge (float32, H x W x 1)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))
    return np.clip((1.0 - radius) * min(w, h) / 2, 0, 1)[..., None].astype(np.float32)


def travel_clip(
    frames: int, size: tuple[int, int], backdrop: np.ndarray, movers: list[Mover], pan: float = 0
) -> tuple[Clip, list[list[np.ndarray]]]:
    """Frames of `movers` crossing `backdrop` (the camera panning right by `pan` of the width),
    and per frame each mover's alpha where it truly is."""
    width, height = size
    scale = max(width * (1 + pan) / backdrop.shape[1], height / backdrop.shape[0])
    wide = cv2.resize(backdrop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    clip, masks = [], []
    for i in range(frames):
        t = i / (frames - 1)
        view = np.array([[1.0, 0, -pan * width * t], [0, 1.0, -(wide.shape[0] - height) / 2]])
        frame = cv2.warpAffine(wide, view, size, flags=cv2.INTER_CUBIC).astype(np.float32)
        alphas = []
        for mover in movers:
            h, w = mover.sprite.shape[:2]
            zoom = mover.grow**t
            centre = [
                (a + (b - a) * t) * side
                for a, b, side in zip(mover.start, mover.end, size, strict=True)
            ]
            place = cv2.getRotationMatrix2D((w / 2, h / 2), mover.turn * t, zoom)
            place[:, 2] += (centre[0] - w / 2, centre[1] - h / 2)
            layer = cv2.warpAffine(mover.sprite, place, size, flags=cv2.INTER_LINEAR)
            alpha = cv2.warpAffine(_ellipse((w, h)), place, size, flags=cv2.INTER_LINEAR)
            frame = frame * (1 - alpha[..., None]) + layer * alpha[..., None]
            alphas.append(alpha)
        clip.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
        masks.append(alphas)
    return clip, masks


def _cat(size: tuple[int, int]) -> np.ndarray:
    return _sprite(data.chelsea(), (20, 280, 60, 420), size)


def _helmet(size: tuple[int, int]) -> np.ndarray:
    return _sprite(data.astronaut(), (0, 260, 120, 380), size)


def _travelling(frames: int, size: tuple[int, int]) -> dict[str, Any]:
    """The travelling-object clips: name -> (frames, per-frame true object alphas)."""
    w = size[0]
    cat = _cat((round(0.22 * w), round(0.16 * w)))
    small_cat = _cat((round(0.15 * w), round(0.11 * w)))
    helmet = _helmet((round(0.16 * w), round(0.16 * w)))
    coffee, rocket, astronaut = data.coffee(), data.rocket(), data.astronaut()
    # "whole width": from touching the left edge to touching the right edge.
    edge = 0.11 + 0.01
    return {
        "quarter": (coffee, [Mover(cat, (0.3, 0.6), (0.55, 0.6))], 0),
        "half": (rocket, [Mover(cat, (0.2, 0.7), (0.7, 0.7))], 0),
        "whole": (coffee, [Mover(cat, (edge, 0.5), (1 - edge, 0.5))], 0),
        "diagonal": (astronaut, [Mover(cat, (0.15, 0.8), (0.7, 0.25))], 0),
        "two objects": (
            coffee,
            [Mover(cat, (0.15, 0.3), (0.65, 0.3)), Mover(helmet, (0.8, 0.72), (0.3, 0.72))],
            0,
        ),
        "scaling": (rocket, [Mover(small_cat, (0.2, 0.6), (0.6, 0.45), grow=1.6)], 0),
        "over a pan": (coffee, [Mover(cat, (0.2, 0.6), (0.65, 0.4))], 0.15),
        "turning": (astronaut, [Mover(cat, (0.25, 0.4), (0.7, 0.6), turn=30)], 0),
        "leaving": (rocket, [Mover(cat, (0.35, 0.5), (1.0, 0.4))], 0),  # half out at the end
    }


def whole_share(truth_masks: list[list[np.ndarray]], truth: Clip, made: Clip) -> float:
    """Share of (in-between frame, object) pairs where the made frame shows the object whole
    at its true place: NCC of the truth's object pixels with the made frame's >= WHOLE_NCC."""
    hits, total = 0, 0
    for alphas, real, frame in zip(truth_masks[1:-1], truth[1:-1], made[1:-1], strict=True):
        for alpha in alphas:
            inside = alpha > 0.5
            a = cv2.cvtColor(real, cv2.COLOR_RGB2GRAY)[inside].astype(np.float64)
            b = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[inside].astype(np.float64)
            a, b = a - a.mean(), b - b.mean()
            ncc = (a * b).sum() / max(1e-9, np.sqrt((a * a).sum() * (b * b).sum()))
            hits += int(ncc >= WHOLE_NCC)
            total += 1
    return hits / max(1, total)


def flow_method(first: np.ndarray, last: np.ndarray, frames: int) -> Clip:
    """The keyframe engine's motion (layers, flow or fallback, as the engine chooses)."""
    motion, _ = choose_motion(first, last, work_width=640, seed=0)
    return [motion.frame_at(i / (frames - 1)) for i in range(frames)]


def flow_alone_method(first: np.ndarray, last: np.ndarray, frames: int) -> Clip:
    """The flow interpolator on the frames as they are: the engine before object layers."""
    interpolator = FlowInterpolator(first, last)
    return [interpolator.frame_at(i / (frames - 1)) for i in range(frames)]


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
    "flow alone": flow_alone_method,
    "crossfade": crossfade_method,
    "minterpolate mci": minterpolate_method,
}


def _run_methods(truth: Clip, frames: int, masks: list[list[np.ndarray]] | None):
    """Every method on one clip: a printed table, and each method's (PSNR, SSIM, whole)."""
    header = f"{'method':<18} {'PSNR dB':>8} {'SSIM':>7} {'ms/clip':>8}"
    print(header + (f" {'whole':>6}" if masks is not None else ""))
    results = {}
    for name, method in METHODS.items():
        start = time.perf_counter()
        made = method(truth[0], truth[-1], frames)
        elapsed = (time.perf_counter() - start) * 1000
        whole = whole_share(masks, truth, made) if masks is not None else float("nan")
        results[name] = (*score(truth, made), whole)
        psnr, ssim, _ = results[name]
        line = f"{name:<18} {psnr:>8.2f} {ssim:>7.4f} {elapsed:>8.0f}"
        print(line + (f" {whole:>6.0%}" if masks is not None else ""))
    return results


def main() -> None:
    """Build every clip, run every method, print one table per motion and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--only", default="", help="comma-separated clip names to run")
    args = parser.parse_args()
    size = (args.width, args.height)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    summary = []
    clips: dict[str, Callable[[], tuple[Clip, list[list[np.ndarray]] | None]]] = {
        motion: (lambda make=make: (make(args.frames, size), None))
        for motion, make in CLIPS.items()
    }
    for name, (backdrop, movers, pan) in _travelling(args.frames, size).items():
        clips[name] = lambda b=backdrop, m=movers, p=pan: travel_clip(args.frames, size, b, m, p)
    for motion, build in clips.items():
        if only and motion not in only:
            continue
        truth, masks = build()
        print(f"\n## {motion} ({args.frames} frames, {size[0]}x{size[1]})")
        results = _run_methods(truth, args.frames, masks)
        ours = results["flow (keyframe)"][0]
        gains = {name: ours - r[0] for name, r in results.items() if name[:4] != "flow"}
        print("gain: " + ", ".join(f"{gain:+.2f} dB over {name}" for name, gain in gains.items()))
        summary.append((motion, gains, results["flow (keyframe)"][2], masks is not None))
    print("\n## targets: camera motions +4 dB over each baseline; travelling objects +4 dB over")
    print("## the crossfade and the object whole at its true place in every in-between frame")
    for motion, gains, whole, travelling in summary:
        if travelling:
            met = gains["crossfade"] >= 4.0 and whole >= 1.0
            shown = f"gain over crossfade {gains['crossfade']:+.2f} dB, whole {whole:.0%}"
        else:
            met = min(gains.values()) >= 4.0
            shown = f"min gain {min(gains.values()):+.2f} dB"
        print(f"{motion:<12} {shown}  {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
