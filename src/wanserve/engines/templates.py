"""Objects that features cannot match, found by their look: template matching.

A smooth object (a ball, a plain shape) gives ORB nothing to hold on to. Once the camera
is taken out, what changed between the frames is blobs: where an object stood in the
first frame and where it stands in the last. Each blob of the first frame, masked to its
own shape, is looked for across the whole last frame; a good match elsewhere is the
object's move (a translation). What is found still has to pass the same silhouette and
likeness checks as a feature-matched object.
"""

from __future__ import annotations

import cv2
import numpy as np

CHANGED = 24.0  # gray levels of local difference that count as a change
MIN_AREA = 0.002  # share of the frame: smaller blobs are noise
MAX_AREA = 0.25  # larger ones cannot be looked for elsewhere in the frame
MIN_SCORE = 0.9  # masked normalised correlation a match must reach
MIN_TRAVEL = 0.02  # share of the frame's width: smaller moves are flow's to handle
POINTS = 32  # sample points of a blob handed on as its "matches"
WINDOW = 5


def template_motions(
    first: np.ndarray, last: np.ndarray, camera: np.ndarray, *, limit: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Up to `limit` object motions (3x3, frame 0 to frame 1 work pixels, camera included),
    each with sample points of the object in frame 0 and where they land in frame 1."""
    height, width = first.shape[:2]
    size = (width, height)
    aligned = cv2.warpPerspective(first, camera, size, flags=cv2.INTER_LINEAR)
    seen = cv2.warpPerspective(np.ones((height, width), np.uint8), camera, size) > 0
    diff = cv2.absdiff(aligned, last).astype(np.float32).mean(axis=2)
    changed = (cv2.blur(diff, (WINDOW, WINDOW)) > CHANGED) & seen
    blobs = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, labels, stats, _ = cv2.connectedComponentsWithStats(blobs)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for label in order[: 4 * limit]:
        x, y, w, h, area = (int(v) for v in stats[label])
        if not MIN_AREA <= area / (width * height) <= MAX_AREA or w >= width or h >= height:
            continue
        mask = (labels[y : y + h, x : x + w] == label).astype(np.uint8)
        patch = np.ascontiguousarray(aligned[y : y + h, x : x + w])
        scores = cv2.matchTemplate(last, patch, cv2.TM_CCOEFF_NORMED, mask=mask)
        scores[~np.isfinite(scores)] = 0
        _, best, _, (bx, by) = cv2.minMaxLoc(scores)
        shift = np.array([bx - x, by - y], np.float64)
        if best < MIN_SCORE or np.hypot(*shift) < MIN_TRAVEL * width:
            continue
        ys, xs = np.nonzero(mask)
        pick = np.linspace(0, len(xs) - 1, min(POINTS, len(xs))).astype(int)
        points = np.stack([xs[pick] + x, ys[pick] + y], axis=1).astype(np.float32)
        back = np.linalg.inv(camera)
        points0 = np.asarray(cv2.perspectiveTransform(points.reshape(-1, 1, 2), back))
        move = np.array([[1.0, 0, shift[0]], [0, 1.0, shift[1]], [0, 0, 1.0]])
        found.append((move @ camera, points0.reshape(-1, 2), points + shift.astype(np.float32)))
        if len(found) >= limit:
            break
    return found
