"""Moving objects as layers over their scene: found, matched, and cut out of it.

Camera motion (a homography) is taken out first. ORB matches the camera does not explain
are grouped by RANSAC into object motions (similarities), matched however far the object
went; when they give none, the blobs that changed are matched by template (`templates`).
For each motion the object's silhouette is the set of pixels that the motion
explains better than staying still, in the component(s) holding the motion's matches.
The background plate of each frame is that frame with the object cut out and the other
frame's view of what is behind it put in; where both frames hide it, it is inpainted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from wanserve.engines.flow import camera_motion
from wanserve.engines.templates import template_motions

MIN_SHIFT = 3.0  # work pixels an object must move against the scene
MIN_TRAVEL = 0.02  # share of the frame's width an object must travel to be a layer
MIN_MATCHES = 10  # ORB matches behind one object's motion
MAX_OBJECTS = 4
RANSAC_PIXELS = 2.0
ERROR_WINDOW = 5  # work pixels over which "moved" and "stayed" compete
MOVED_MARGIN = 6.0  # gray levels by which the object's motion must explain a pixel better
UNSEEN = 255.0  # the error of a pixel whose match falls outside the other frame
MATCHED = 12.0  # gray levels: where only the object's motion can be tried, a match
CHANGED = 24.0  # gray levels: where only the camera can be tried, a change
MIN_AREA = 0.002  # share of the frame: smaller silhouettes are noise
MAX_AREA = 0.5  # larger ones are not an object over a scene
MIN_NCC = 0.6  # the object's two views must look alike
FEATHER = 1.5  # Gaussian sigma of the silhouette's edge, in input pixels
PLATE_GROW = 3  # work pixels the plate's cut-out reaches past the silhouette
_NO_MAP: Any = None  # cv2's stubs do not admit the documented "no mask"


@dataclass
class Layer:
    """One moving object: where it is in each frame and how it got from one to the other.

    `motion` takes frame-0 input pixels to frame-1 input pixels (3x3, camera included);
    `alpha0` / `alpha1` are its feathered silhouettes (float32, 0..1) in each frame.
    """

    motion: np.ndarray
    alpha0: np.ndarray
    alpha1: np.ndarray
    centre0: tuple[float, float]

    def summary(self) -> dict[str, Any]:
        """What the job's metadata says about the object: where its centre went (input
        pixels, camera included), its scale and its turn (degrees, clockwise on screen)."""
        x, y = self.centre0
        end = cv2.perspectiveTransform(np.array([[[x, y]]], np.float64), self.motion)[0, 0]
        linear = self.motion[:2, :2] / self.motion[2, 2]
        return {
            "from": [round(x, 1), round(y, 1)],
            "to": [round(float(end[0]), 1), round(float(end[1]), 1)],
            "displacement": [round(float(end[0] - x), 1), round(float(end[1] - y), 1)],
            "scale": round(float(np.sqrt(abs(np.linalg.det(linear)))), 3),
            "angle": round(float(np.degrees(np.arctan2(linear[1, 0], linear[0, 0]))), 1),
            "area": round(float(self.alpha0.mean()), 4),
        }


@dataclass
class Scene:
    """The two frames split into background plates and the objects moving over them."""

    plate0: np.ndarray
    plate1: np.ndarray
    layers: list[Layer]


def find_layers(first: np.ndarray, last: np.ndarray, *, work_width: int) -> Scene | None:
    """The moving objects of two same-size RGB frames and their plates, or None if none."""
    height, width = first.shape[:2]
    ww = max(16, min(work_width, width))
    work = (ww, max(16, round(height * ww / width)))
    small0, small1 = (cv2.resize(f, work, interpolation=cv2.INTER_AREA) for f in (first, last))
    gray0, gray1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (small0, small1))
    # 1. The camera, and the matches' frame-0 ends seen from frame 1's camera.
    homography, src, dst = camera_motion(gray0, gray1)
    camera = np.eye(3) if homography is None else homography
    aligned = src
    if len(src):
        aligned = np.asarray(cv2.perspectiveTransform(src.reshape(-1, 1, 2), camera)).reshape(-1, 2)
    # 2. Each object's motion (frame 0 to frame 1, camera included) and its silhouettes.
    silhouettes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    left = np.linalg.norm(dst - aligned, axis=1) > MIN_SHIFT
    while len(silhouettes) < MAX_OBJECTS and left.sum() >= MIN_MATCHES:
        group = _object_motion(aligned, dst, left)
        if group is None:
            break
        relative, chosen = group
        left[chosen] = False
        # Small moves are flow's to handle; near-camera "objects" are its fitting error.
        travel = np.median(np.linalg.norm(dst[chosen] - aligned[chosen], axis=1))
        if travel < MIN_TRAVEL * work[0]:
            continue
        motion = _square(relative) @ camera
        found = _silhouettes(small0, small1, camera, motion, src[chosen], dst[chosen])
        if found is not None:
            silhouettes.append((motion, *found))
            # Matches on this object that RANSAC left out must not make a second one.
            left &= ~_inside_mask(found[0], src) & ~_inside_mask(found[1], dst)
    # 3. When features matched nothing, the changed blobs matched by their look.
    if not silhouettes:
        for motion, points0, points1 in template_motions(small0, small1, camera, limit=2):
            found = _silhouettes(small0, small1, camera, motion, points0, points1)
            if found is not None:
                silhouettes.append((motion, *found))
    if not silhouettes:
        return None
    # 4. Plates at full size, then the layers in input pixels.
    to_full = _work_to_full(work, (width, height))
    from_full = np.linalg.inv(to_full)
    plate0, plate1 = _plates(first, last, to_full @ camera @ from_full, silhouettes, work)
    layers = []
    for motion, mask0, mask1 in silhouettes:
        alpha0, alpha1 = _alpha(mask0, (width, height)), _alpha(mask1, (width, height))
        moments = cv2.moments(alpha0)
        centre = (moments["m10"] / moments["m00"], moments["m01"] / moments["m00"])
        layers.append(Layer(to_full @ motion @ from_full, alpha0, alpha1, centre))
    return Scene(plate0, plate1, layers)


def _object_motion(
    src: np.ndarray, dst: np.ndarray, left: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """The best-supported similarity (2x3) among the `left` matches, and its matches' indices.

    Matches the camera leaves unexplained are grouped by RANSAC, one group at a time.
    """
    index = np.flatnonzero(left)
    model, inliers = cv2.estimateAffinePartial2D(
        src[index], dst[index], ransacReprojThreshold=RANSAC_PIXELS
    )
    if model is None or inliers.sum() < MIN_MATCHES:
        return None
    return np.asarray(model), index[inliers.ravel() > 0]


def _inside_mask(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each point, whether it falls on the mask."""
    h, w = mask.shape
    x = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    y = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    return np.asarray(mask[y, x] > 0)


def _silhouettes(
    first: np.ndarray,
    last: np.ndarray,
    camera: np.ndarray,
    motion: np.ndarray,
    points0: np.ndarray,
    points1: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The object's masks (uint8 0/1, work size) in frame 0 and in frame 1, each in its own
    frame's pixels: a pixel is the object's where its motion explains the other frame
    better than the camera's does (or the camera's view of it left the other frame)."""
    size = (first.shape[1], first.shape[0])
    moved0 = _better(first, last, motion, camera, inverse=True)
    moved1 = _better(last, first, motion, camera, inverse=False)
    mask0, mask1 = _holding(moved0, points0), _holding(moved1, points1)
    # Either view may miss parts that look like what is behind them: take both.
    back = cv2.warpPerspective(mask1, motion, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    mask0 = _fill(np.asarray(np.maximum(mask0, back), np.uint8))
    if not MIN_AREA <= float(mask0.mean()) <= MAX_AREA:
        return None
    mask1 = np.asarray(cv2.warpPerspective(mask0, motion, size, flags=cv2.INTER_NEAREST))
    pulled = cv2.warpPerspective(last, motion, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    seen = cv2.warpPerspective(
        np.ones_like(mask0), motion, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    )
    if _ncc(first, pulled, mask0 & seen) < MIN_NCC:
        return None
    return mask0, mask1


def _better(
    image: np.ndarray, other: np.ndarray, motion: np.ndarray, camera: np.ndarray, *, inverse: bool
) -> np.ndarray:
    """Where `image`'s pixels are explained better by `other` through the object's motion
    than through the camera's (`inverse`: the motions take `image` to `other`)."""
    size = (image.shape[1], image.shape[0])
    flags = cv2.INTER_LINEAR | (cv2.WARP_INVERSE_MAP if inverse else 0)
    ones = np.ones(image.shape[:2], np.uint8)
    errors = []
    for matrix in (motion, camera):
        pulled = cv2.warpPerspective(other, matrix, size, flags=flags)
        seen = cv2.warpPerspective(ones, matrix, size, flags=flags) > 0
        error = _error(image, pulled)
        errors.append(np.where(seen, error, UNSEEN))
    moved, stayed = errors
    # Off the other frame one motion explains nothing: the other decides alone. Where the
    # camera's view left the frame, the object's motion must match; where the object
    # leaves the frame, what the camera sees there must have changed.
    explained = moved + MOVED_MARGIN < stayed
    explained = np.where(stayed >= UNSEEN, moved < MATCHED, explained)
    return np.asarray(np.where(moved >= UNSEEN, stayed > CHANGED, explained))


def _error(one: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Local mean absolute colour difference (gray levels)."""
    diff = cv2.absdiff(one, other).astype(np.float32).mean(axis=2)
    return np.asarray(cv2.blur(diff, (ERROR_WINDOW, ERROR_WINDOW)))


def _holding(candidates: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The connected parts of `candidates` (bool) that hold at least two of `points`."""
    opened = cv2.morphologyEx(candidates.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3)))
    mask = np.asarray(opened, np.uint8)
    count, labels = cv2.connectedComponents(mask)
    h, w = mask.shape
    xy = np.round(points).astype(int)
    xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)]
    hits = np.bincount(labels[xy[:, 1], xy[:, 0]], minlength=count)
    keep = np.flatnonzero(hits >= 2)
    keep = keep[keep > 0]
    return np.isin(labels, keep).astype(np.uint8)


def _fill(mask: np.ndarray) -> np.ndarray:
    """The mask closed and with its holes filled: an object has no see-through holes."""
    closed = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(closed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled


def _ncc(one: np.ndarray, other: np.ndarray, mask: np.ndarray) -> float:
    """Normalised cross-correlation of two images' gray levels over `mask`."""
    if mask.sum() < 16:
        return 0.0
    take = mask > 0
    a = cv2.cvtColor(one, cv2.COLOR_RGB2GRAY)[take].astype(np.float64)
    b = cv2.cvtColor(other, cv2.COLOR_RGB2GRAY)[take].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(1e-9, np.sqrt((a * a).sum() * (b * b).sum())))


def _plates(
    first: np.ndarray,
    last: np.ndarray,
    camera: np.ndarray,
    silhouettes: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    work: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame with its objects cut out and the background behind them put in."""
    height, width = first.shape[:2]
    size = (width, height)
    kernel = np.ones((2 * PLATE_GROW + 1, 2 * PLATE_GROW + 1), np.uint8)
    hidden0 = np.zeros((work[1], work[0]), np.uint8)  # each in its own frame's work pixels
    hidden1 = np.zeros_like(hidden0)
    for _, mask0, mask1 in silhouettes:
        hidden0 = np.maximum(hidden0, cv2.dilate(mask0, kernel))
        hidden1 = np.maximum(hidden1, cv2.dilate(mask1, kernel))
    cut0, cut1 = _full_mask(hidden0, size), _full_mask(hidden1, size)
    ones = np.ones((height, width), np.uint8)
    # 1. Frame 1's plate: frame 0 seen from frame 1's camera shows what its objects hide.
    aligned0 = cv2.warpPerspective(first, camera, size, flags=cv2.INTER_LINEAR)
    clear0 = cv2.warpPerspective((~cut0).astype(np.uint8), camera, size) > 0
    plate1 = last.copy()
    take = cut1 & clear0
    plate1[take] = aligned0[take]
    if (cut1 & ~take).any():
        plate1 = _inpaint(plate1, cut1 & ~take, work)
    # 2. Frame 0's plate: frame 1's plate seen from frame 0's camera.
    back = np.linalg.inv(camera)
    behind = cv2.warpPerspective(plate1, back, size, flags=cv2.INTER_LINEAR)
    seen1 = cv2.warpPerspective(ones, back, size) > 0
    plate0 = first.copy()
    take0 = cut0 & seen1
    plate0[take0] = behind[take0]
    if (cut0 & ~take0).any():
        plate0 = _inpaint(plate0, cut0 & ~take0, work)
    return plate0, plate1


def _inpaint(image: np.ndarray, holes: np.ndarray, work: tuple[int, int]) -> np.ndarray:
    """`image` with `holes` (bool, full size) filled from around them, worked out small."""
    height, width = image.shape[:2]
    small = cv2.resize(image, work, interpolation=cv2.INTER_AREA)
    small_holes = cv2.resize(holes.astype(np.uint8), work, interpolation=cv2.INTER_NEAREST)
    small_holes = cv2.dilate(small_holes, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_holes, 5, cv2.INPAINT_TELEA)
    big = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    out[holes] = big[holes]
    return out


def _full_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A work-size 0/1 mask at full size, as bool."""
    return np.asarray(cv2.resize(mask * 255, size, interpolation=cv2.INTER_LINEAR) > 64)


def _alpha(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A work-size 0/1 mask as a feathered full-size alpha (float32, 0..1)."""
    big = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    return np.asarray(cv2.GaussianBlur(big, (0, 0), FEATHER))


def _work_to_full(work: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """3x3 taking work pixel coordinates to input pixel coordinates (centres aligned)."""
    sx, sy = size[0] / work[0], size[1] / work[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _square(affine: np.ndarray) -> np.ndarray:
    return np.vstack([affine, [0.0, 0.0, 1.0]])
