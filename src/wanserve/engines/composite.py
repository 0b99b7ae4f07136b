"""In-betweens of a layered scene: each object carried along its path over the moving plate.

The background is the flow interpolation of the two plates (objects cut out), so the
camera's pan, zoom or roll is today's. Each object travels on top: its centre on a
straight line (the frame times carry the easing and the audio's pacing), turning and
scaling at an even rate, its two views crossed from the first to the last and drawn
part of the way along the flow between them (`AppearanceFlow`: a cat whose legs differ
morphs), with their feathered silhouettes as the layer's alpha. Work is limited to the
box the object covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from wanserve.engines.flow import FlowInterpolator
from wanserve.engines.layers import Layer, Scene
from wanserve.engines.morph import AppearanceFlow

STILL_PIXELS = 0.5  # background flow below this everywhere: the scene is still
_EPS = 1e-4
_REPLICATE = cv2.BORDER_REPLICATE
_NO_MAP: Any = None  # cv2's stubs do not admit the documented "no second map"
_SHOWN = 0.01  # alpha below which a pixel is not part of the object


@dataclass
class _Path:
    """One object's motion split into a similarity (moved evenly) and what it leaves."""

    layer: Layer
    centre: np.ndarray  # frame-0 pixels
    shift: np.ndarray  # where the centre goes, without the camera
    log_scale: float
    angle: float  # radians
    rest: np.ndarray  # 3x3 left of the motion once the similarity is undone
    box0: np.ndarray  # corners (4 x 1 x 2) of the object in frame 0
    box1: np.ndarray  # and in frame 1
    morph: AppearanceFlow | None  # how its look changes beyond the rigid path, if it does

    def at(self, t: float) -> np.ndarray:
        """3x3 taking frame-0 pixels to where the object's points are at time t (no camera)."""
        scale = np.exp(t * self.log_scale)
        cos, sin = scale * np.cos(t * self.angle), scale * np.sin(t * self.angle)
        linear = np.array([[cos, -sin], [sin, cos]])
        similarity = np.eye(3)
        similarity[:2, :2] = linear
        similarity[:2, 2] = self.centre + t * self.shift - linear @ self.centre
        return np.asarray(similarity @ (np.eye(3) + t * (self.rest - np.eye(3))))


class LayeredMotion:
    """The frame at time t of a scene split into a background and moving objects."""

    def __init__(
        self,
        first: np.ndarray,
        last: np.ndarray,
        scene: Scene,
        background: FlowInterpolator,
        *,
        morph: bool = True,
    ):
        self.first, self.last = first, last
        self.background = background
        # A still scene needs no flow per frame: its two plates only differ in noise.
        field = background.motion_field()
        self._still = (
            background.homography is None
            and float(np.percentile(np.abs(field), 99.5)) < STILL_PIXELS
        )
        self._ones = np.ones(first.shape[:2], np.float32)
        camera = background.camera_at(1.0)
        self._paths = []
        for layer in scene.layers:
            flow = AppearanceFlow.between(first, last, scene.plate1, layer)
            path = _path(layer, np.linalg.inv(camera) @ layer.motion, flow if morph else None)
            self._paths.append(path)

    def frame_at(self, t: float) -> np.ndarray:
        """The in-between frame at time t in [0, 1], at the inputs' size."""
        t = float(t)
        if t <= 0.0 or t >= 1.0:
            return (self.first if t <= 0.0 else self.last).copy()
        if self._still:
            plates = self.background
            out = np.asarray(cv2.addWeighted(plates.first, 1.0 - t, plates.last, t, 0.0))
        else:
            out = self.background.frame_at(t)
        camera = self.background.camera_at(t)
        for path in self._paths:
            to_now = camera @ path.at(t)
            self._draw(out, path.layer, t, to_now, to_now @ np.linalg.inv(path.layer.motion), path)
        return out

    def _draw(
        self,
        out: np.ndarray,
        layer: Layer,
        t: float,
        from0: np.ndarray,
        from1: np.ndarray,
        path: _Path,
    ) -> None:
        """Composite one object, carried by `from0` / `from1` from either frame, into `out`."""
        height, width = out.shape[:2]
        corners = np.concatenate(
            [cv2.perspectiveTransform(path.box0, from0), cv2.perspectiveTransform(path.box1, from1)]
        ).reshape(-1, 2)
        left, top = np.floor(corners.min(axis=0)).astype(int)
        right, bottom = np.ceil(corners.max(axis=0)).astype(int) + 1
        left, top = max(0, left), max(0, top)
        right, bottom = min(width, right), min(height, bottom)
        if right <= left or bottom <= top:
            return
        # Each output pixel traced back into frame 1 along the path, then part of the way
        # along the appearance flow into either view, and from frame 1 into frame 0.
        xs = np.arange(left, right, dtype=np.float32)
        ys = np.arange(top, bottom, dtype=np.float32)
        grid = np.dstack(np.meshgrid(xs, ys))
        points1 = np.asarray(cv2.perspectiveTransform(grid, np.linalg.inv(from1)), np.float32)
        points0 = points1
        if path.morph is not None:
            forward, backward = path.morph.offsets(points1)
            points0 = np.asarray(points1 + t * backward, np.float32)
            points1 = np.asarray(points1 + (1.0 - t) * forward, np.float32)
        points0 = np.asarray(
            cv2.perspectiveTransform(points0, np.linalg.inv(layer.motion)), np.float32
        )
        views = []
        for image, alpha, points, weight in (
            (self.first, layer.alpha0, points0, 1.0 - t),
            (self.last, layer.alpha1, points1, t),
        ):
            colour = cv2.remap(image, points, _NO_MAP, cv2.INTER_LINEAR, borderMode=_REPLICATE)
            shown = cv2.remap(alpha, points, _NO_MAP, cv2.INTER_LINEAR)
            views.append((colour, shown, weight * _inside(points, width, height)))
        (colour0, alpha0, seen0), (colour1, alpha1, seen1) = views
        # A view outside its own frame says nothing: the other view stands in for it.
        part0, part1 = seen0 * alpha0, seen1 * alpha1
        alpha = (part0 + part1) / (seen0 + seen1 + _EPS)
        colour = cv2.blendLinear(colour0, colour1, part0 + _EPS, part1 + _EPS)
        region = out[top:bottom, left:right]
        alpha = alpha.astype(np.float32)
        region[...] = cv2.blendLinear(region, colour, 1.0 - alpha, alpha)


def _inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """1 where points fall inside a width x height frame, else 0 (float32)."""
    x, y = points[..., 0], points[..., 1]
    inside = (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)
    return inside.astype(np.float32)


def _path(layer: Layer, relative: np.ndarray, morph: AppearanceFlow | None) -> _Path:
    """The object's path from its motion with the camera's taken out (frame-0 pixels)."""
    relative = relative / relative[2, 2]
    centre = np.array(layer.centre0, np.float64)
    end = _apply(relative, centre)
    step = 1.0
    jacobian = np.stack(
        [(_apply(relative, centre + d) - end) / step for d in np.eye(2) * step], axis=1
    )
    scale = float(np.sqrt(abs(np.linalg.det(jacobian))))
    angle = float(np.arctan2(jacobian[1, 0] - jacobian[0, 1], jacobian[0, 0] + jacobian[1, 1]))
    cos, sin = scale * np.cos(angle), scale * np.sin(angle)
    similarity = np.eye(3)
    similarity[:2, :2] = [[cos, -sin], [sin, cos]]
    similarity[:2, 2] = end - similarity[:2, :2] @ centre
    rest = np.linalg.inv(similarity) @ relative
    return _Path(
        layer=layer,
        centre=centre,
        shift=end - centre,
        log_scale=float(np.log(max(scale, 1e-6))),
        angle=angle,
        rest=rest / rest[2, 2],
        box0=_box(layer.alpha0),
        box1=_box(layer.alpha1),
        morph=morph,
    )


def _apply(matrix: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y, w = matrix @ np.array([point[0], point[1], 1.0])
    return np.array([x / w, y / w])


def _box(alpha: np.ndarray) -> np.ndarray:
    """Corners of the box around an alpha's shown pixels (4 x 1 x 2, float32)."""
    ys, xs = np.nonzero(alpha > _SHOWN)
    if len(xs) == 0:
        return np.zeros((4, 1, 2), np.float32)
    x0, x1, y0, y1 = xs.min() - 1.0, xs.max() + 1.0, ys.min() - 1.0, ys.max() + 1.0
    return np.array([[[x0, y0]], [[x1, y0]], [[x0, y1]], [[x1, y1]]], np.float32)
