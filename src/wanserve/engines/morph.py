"""How an object's look changes between its two views: flow between them, for the morph.

The object's rigid path (a similarity) lines its first view up with its last; what is
left (legs in another pose, a turned head) is dense optical flow between the two lined-up
views, worked out once in the object's box in frame 1's pixels. An in-between samples
each view part of the way along that flow, so the shapes meet instead of double-exposing.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from wanserve.engines.layers import Layer

MAX_SIDE = 256  # the views are compared at most this large: the flow is smooth
MARGIN = 8  # input pixels around the object's box
RIGID_PIXELS = 0.75  # views this close (95th percentile of the flow) need no morph
_NO_MAP: Any = None  # cv2's stubs do not admit the documented "no initial flow"


class AppearanceFlow:
    """Flows between the object's first view (carried into frame 1) and its last view.

    `forward(p)`: where frame-1 pixel p of the first view is in the last view, as an
    offset; `backward(p)`: where the last view's p is in the first view's. Both in input
    pixels, over `box` (left, top, right, bottom) of frame 1; zero outside it.
    """

    def __init__(self, forward: np.ndarray, backward: np.ndarray, box: tuple[int, int, int, int]):
        self.forward, self.backward, self.box = forward, backward, box
        left, top, right, bottom = box
        self._scale = np.array(
            [forward.shape[1] / (right - left), forward.shape[0] / (bottom - top)], np.float32
        )

    @classmethod
    def between(
        cls, first: np.ndarray, last: np.ndarray, plate: np.ndarray, layer: Layer
    ) -> AppearanceFlow | None:
        """The flow for one object (`plate`: frame 1's background), or None if it is rigid."""
        motion, alpha1 = layer.motion, layer.alpha1
        height, width = last.shape[:2]
        ys, xs = np.nonzero(alpha1 > 0.5)
        if len(xs) < 16:
            return None
        left, top = max(0, int(xs.min()) - MARGIN), max(0, int(ys.min()) - MARGIN)
        right, bottom = (
            min(width, int(xs.max()) + MARGIN + 1),
            min(height, int(ys.max()) + MARGIN + 1),
        )
        shrink = min(1.0, MAX_SIDE / max(right - left, bottom - top))
        small = (max(16, round((right - left) * shrink)), max(16, round((bottom - top) * shrink)))
        to_box = np.array([[shrink, 0, -left * shrink], [0, shrink, -top * shrink], [0, 0, 1.0]])
        # Both views over the same background: what differs is the object alone.
        behind = cv2.warpPerspective(plate, to_box, small, flags=cv2.INTER_AREA)
        views = []
        for image, alpha, matrix in (
            (first, layer.alpha0, to_box @ motion),
            (last, alpha1, to_box),
        ):
            view = cv2.warpPerspective(image, matrix, small, flags=cv2.INTER_AREA)
            shown = cv2.warpPerspective(alpha, matrix, small, flags=cv2.INTER_LINEAR)
            mixed = cv2.blendLinear(view, behind, shown, 1.0 - shown)
            views.append(cv2.cvtColor(mixed, cv2.COLOR_RGB2GRAY))
        gray0, gray1 = views
        dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        forward = np.asarray(dis.calc(gray0, gray1, _NO_MAP)) / shrink
        backward = np.asarray(dis.calc(gray1, gray0, _NO_MAP)) / shrink
        inside = cv2.resize(alpha1[top:bottom, left:right], small) > 0.5
        if not inside.any():
            return None
        if np.percentile(np.linalg.norm(forward[inside], axis=1), 95) < RIGID_PIXELS:
            return None
        return cls(
            forward.astype(np.float32), backward.astype(np.float32), (left, top, right, bottom)
        )

    def offsets(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The forward and backward flow at frame-1 points (H x W x 2, float32)."""
        left, top = self.box[:2]
        grid = (points - np.array([left, top], np.float32) + 0.5) * self._scale - 0.5
        sample = [
            cv2.remap(flow, grid, _NO_MAP, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            for flow in (self.forward, self.backward)
        ]
        return np.asarray(sample[0]), np.asarray(sample[1])
