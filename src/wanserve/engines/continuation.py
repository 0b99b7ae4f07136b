"""Continuing a clip on the CPU when no last frame says where to go: the camera glides on.

The clip's camera motion over its last frames (a similarity: pan, zoom, roll) is measured
with sparse optical flow, and the new part starts moving at exactly that speed from the
clip's last frame, then eases to rest. A slight zoom grows with the travel so that at rest
the camera does not show the picture's edge (on the way, a thin band is mirrored in).
With a last frame, the keyframe engine's own morph runs from the clip's last frame instead
(the worker hands it over as the first frame).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from wanserve.engines.base import EngineContext, FrameStream, GenerationRequest
from wanserve.engines.frames import load_frame
from wanserve.media.clip import count_frames, fit, tail_frames

logger = logging.getLogger(__name__)

TAIL = 6  # clip frames whose motion is measured (five steps)
EASE_SECONDS = 1.0  # how long the camera takes to come to rest
MAX_FEATURES = 400


@dataclass(frozen=True)
class CameraStep:
    """One frame's camera motion, about the picture's centre, in output pixels."""

    dx: float = 0.0
    dy: float = 0.0
    log_scale: float = 0.0
    angle: float = 0.0  # radians

    def scaled(self, factor: float) -> CameraStep:
        """This motion `factor` times as fast."""
        return CameraStep(
            self.dx * factor, self.dy * factor, self.log_scale * factor, self.angle * factor
        )

    def plus(self, other: CameraStep) -> CameraStep:
        """This motion followed by `other` (small steps add)."""
        return CameraStep(
            self.dx + other.dx,
            self.dy + other.dy,
            self.log_scale + other.log_scale,
            self.angle + other.angle,
        )


def measure_step(frames: list[np.ndarray]) -> CameraStep:
    """The median camera motion per frame between consecutive grey frames (identity if
    the frames give too little to track)."""
    steps = []
    for before, after in itertools.pairwise(frames):
        step = _pair_step(before, after)
        if step is not None:
            steps.append(step)
    if not steps:
        return CameraStep()
    values = np.median(np.array([[s.dx, s.dy, s.log_scale, s.angle] for s in steps]), axis=0)
    return CameraStep(*(float(v) for v in values))


def _pair_step(before: np.ndarray, after: np.ndarray) -> CameraStep | None:
    points = cv2.goodFeaturesToTrack(
        before, maxCorners=MAX_FEATURES, qualityLevel=0.01, minDistance=7
    )
    if points is None or len(points) < 8:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(before, after, points, None)  # type: ignore[call-overload]
    found = status.reshape(-1) == 1
    if found.sum() < 8:
        return None
    height, width = before.shape[:2]
    centre = np.array([width / 2, height / 2], dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(
        points[found].reshape(-1, 2) - centre,
        moved[found].reshape(-1, 2) - centre,
        method=cv2.RANSAC,
        ransacReprojThreshold=1.5,
    )
    if matrix is None:
        return None
    a, b = float(matrix[0, 0]), float(matrix[1, 0])
    return CameraStep(
        float(matrix[0, 2]), float(matrix[1, 2]), float(np.log(np.hypot(a, b))), np.arctan2(b, a)
    )


class CameraGlide:
    """The new part's frames: the clip's last frame carried on by the eased camera."""

    def __init__(self, last: np.ndarray, step: CameraStep, frame_count: int, ease_frames: int):
        self.last = last
        height, width = last.shape[:2]
        self.centre = (width / 2, height / 2)
        # Cumulative camera position of every frame; frame 0 is the clip's last frame.
        speeds = [_ease_out(k / max(1, ease_frames)) for k in range(1, frame_count)]
        self.positions = [CameraStep()]
        for speed in speeds:
            self.positions.append(self.positions[-1].plus(step.scaled(speed)))
        travel = self.positions[-1]
        # The zoom that keeps the picture's edge out of view at the end of the travel.
        self.cover = (
            2 * max(abs(travel.dx) / width, abs(travel.dy) / height)
            + abs(travel.angle) * (width + height) / max(width, height)
            + max(0.0, -travel.log_scale)
        )
        self.total = max(1e-9, _distance(travel))

    def frame_at(self, index: int) -> np.ndarray:
        """Frame `index` of the new part."""
        position = self.positions[index]
        if index == 0 or _distance(position) == 0:
            return self.last.copy()
        # The cover zoom grows with the square of the travel: none at the seam, where any
        # zoom would read as a jump, all of it once the camera is at rest.
        share = _distance(position) / self.total
        zoom = np.exp(position.log_scale) * (1 + self.cover * share * share)
        matrix = cv2.getRotationMatrix2D(self.centre, float(np.degrees(-position.angle)), zoom)
        matrix[0, 2] += position.dx
        matrix[1, 2] += position.dy
        height, width = self.last.shape[:2]
        return np.asarray(
            cv2.warpAffine(
                self.last,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT101,
            )
        )


def _ease_out(u: float) -> float:
    """Speed from 1 (the clip's) to 0 (rest) with zero slope at both ends."""
    u = min(1.0, max(0.0, u))
    return 1.0 - u * u * (3.0 - 2.0 * u)


def _distance(step: CameraStep) -> float:
    return float(np.hypot(step.dx, step.dy) + abs(step.log_scale) * 100 + abs(step.angle) * 100)


def glide_from_clip(
    request: GenerationRequest, context: EngineContext, *, fps: float, work_width: int
) -> FrameStream:
    """The `seconds` after the clip of `request`, the camera easing to rest (no last frame)."""
    assert request.first_clip is not None
    size = (request.width, request.height)
    frame_count = round(request.seconds * fps)
    # 1. The clip's end, at the output size, and its camera motion measured small.
    context.raise_if_cancelled()
    last = np.asarray(load_frame(request.first_frame.path, size, param="first_clip"))
    work = (work_width, max(2, round(work_width * request.height / request.width)))
    tail = [
        cv2.cvtColor(fit(image, work), cv2.COLOR_RGB2GRAY)
        for image in tail_frames(request.first_clip.path, TAIL)
    ]
    measured = measure_step(tail)
    # 2. To output pixels, and from clip frames to output frames (the clip is resampled
    # to the output's rate over its own length).
    clip_frames = count_frames(request.first_clip.path)
    duration = request.first_clip.duration or clip_frames / fps
    per_frame = clip_frames / max(1.0, duration * fps)
    step = CameraStep(
        measured.dx * request.width / work[0],
        measured.dy * request.height / work[1],
        measured.log_scale,
        measured.angle,
    ).scaled(per_frame)
    context.report_progress(0.03)
    glide = CameraGlide(last, step, frame_count, round(EASE_SECONDS * fps))
    metadata = {
        "interpolation": "camera_glide",
        "camera_step": {
            "dx": round(step.dx, 3),
            "dy": round(step.dy, 3),
            "zoom": round(float(np.exp(step.log_scale)), 5),
            "roll_degrees": round(float(np.degrees(step.angle)), 4),
        },
        "ease_seconds": EASE_SECONDS,
        "work_width": work_width,
    }
    logger.info("job %s: clip continued by %s", request.job_id, metadata)
    return FrameStream(
        fps=fps,
        frame_count=frame_count,
        frames=_frames(glide, frame_count, context),
        metadata=metadata,
        progress_start=0.03,
    )


def _frames(glide: CameraGlide, count: int, context: EngineContext) -> Iterator[np.ndarray]:
    for index in range(count):
        context.raise_if_cancelled()
        yield glide.frame_at(index)
