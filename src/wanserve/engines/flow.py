"""Flow-based in-betweening of two frames: global homography plus dense residual flow.

Motion is estimated once, at a working scale: a RANSAC homography from ORB matches
takes out camera motion (pan, zoom, rotation); matches it leaves unexplained give the
motions of moving objects, which seed DIS optical flow (both ways) so that it finds
displacements larger than the objects' detail. For a time t each output pixel is traced
back into both frames (along either frame's flow, keeping the trace that lands on the
layer in front), both frames are warped with `cv2.remap` at full size, and the two are
blended with per-pixel weights that drop a frame where the other one shows the point
has no match in it (occluded or revealed), so hidden areas do not ghost.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import scipy.linalg

MIN_WORK = 16  # smallest working side, in pixels
MIN_MATCHES = 40  # RANSAC inliers below this: no trustworthy global motion
MIN_INLIER_RATIO = 0.25
MIN_COVERAGE = 0.25  # share of the frame the inliers' hull must span to be camera motion
OBJECT_MIN_SHIFT = 3.0  # work pixels a match must move against the scene to be an object's
MIN_OBJECT_MATCHES = 10
MAX_OBJECTS = 4
SEED_WINDOW = 15  # work pixels: the patch over which object motions compete
SEED_PENALTY = 2.0  # gray levels an object's motion must win by
FB_TOLERANCE = 1.0  # work pixels: forward-backward error still called consistent
MIN_CONSISTENCY = 0.45  # share of consistent pixels for two frames to "correspond"
MAX_RESIDUAL = 0.09  # mean abs error (0..1) left after motion compensation, same purpose
MAP_STEP = 3  # per-frame maps on every 3rd work pixel: flows are smooth, 9x less work
FILL_SPEED = 4.0  # work pixels: how strongly hidden areas prefer slower neighbours' flow
TRACE_STEPS = 3  # fixed-point steps tracing a pixel back along a flow
NEAR_BIAS = 4.0  # trace-miss pixels by which the far frame's trace must win at the far end
GRAY_PER_PIXEL = 16.0  # brightness mismatch that weighs like one pixel of trace miss
_EPS = 1e-3  # keeps a pixel's blend defined where neither frame is trusted


class FlowInterpolator:
    """In-between frames of `first` and `last` (same-size RGB uint8) at any time t.

    Holds full-size scratch buffers: one `frame_at` call at a time per instance.
    """

    def __init__(self, first: np.ndarray, last: np.ndarray, *, work_width: int = 640):
        if first.shape != last.shape or first.ndim != 3 or first.shape[2] != 3:
            raise ValueError("first and last must be RGB images of the same size")
        self.first, self.last = first, last
        self.height, self.width = first.shape[:2]
        # Never finer than the inputs; never below DIS's smallest size (12 px).
        ww = max(MIN_WORK, min(work_width, self.width))
        self._work = (ww, max(MIN_WORK, round(self.height * ww / self.width)))
        gray0, gray1 = _gray(first, self._work), _gray(last, self._work)
        # 1. Global motion, kept only when reliable and not a no-op.
        self.homography, src, dst = camera_motion(gray0, gray1)
        log = None if self.homography is None else _matrix_log(self.homography)
        if log is None:
            self.homography, log = None, np.zeros((3, 3))
        self._log = log
        self._h = np.eye(3) if self.homography is None else self.homography
        self._h_inv = np.linalg.inv(self._h)
        # 2. Residual flow both ways, its consistency and whether the frames correspond.
        objects = _object_motions(_transform(src, self._h), dst) if len(src) else []
        self._estimate(gray0, gray1, objects)
        # 3. What every frame reuses.
        self._grid = _grid(*self._work, MAP_STEP)
        self._scale = np.array(
            [self.width / self._work[0], self.height / self._work[1]], np.float32
        )
        self._buffers = _Buffers(self.height, self.width)

    def _estimate(self, gray0: np.ndarray, gray1: np.ndarray, objects: list[np.ndarray]) -> None:
        """Residual flows between frame 0 aligned onto frame 1 and frame 1, with trust maps."""
        aligned = cv2.warpPerspective(gray0, self._h, self._work, flags=cv2.INTER_LINEAR)
        inside = cv2.warpPerspective(np.ones_like(gray0), self._h, self._work) > 0
        aligned = np.where(inside, aligned, gray1)  # nothing to match outside: no motion
        backwards = [np.asarray(cv2.invertAffineTransform(m)) for m in objects]
        self._r01 = _dis_flow(aligned, gray1, _seed_flow(aligned, gray1, objects))
        self._r10 = _dis_flow(gray1, aligned, _seed_flow(gray1, aligned, backwards))
        error0 = _fb_error(self._r01, self._r10)
        error1 = _fb_error(self._r10, self._r01)
        self._trust0, self._trust1 = _trust(error0), _trust(error1)
        self._r01 = _fill_hidden(self._r01, self._trust0)
        self._r10 = _fill_hidden(self._r10, self._trust1)
        self._gray0, self._gray1 = aligned.astype(np.float32), gray1.astype(np.float32)
        consistent = (error0 < FB_TOLERANCE) & inside
        self.consistency = float(consistent.sum() / max(1, int(inside.sum())))
        self.residual = _residual(aligned, gray1, self._r01)
        self.corresponds = self.consistency >= MIN_CONSISTENCY and self.residual <= MAX_RESIDUAL

    def motion_field(self) -> np.ndarray:
        """Where each frame-0 pixel goes in frame 1: (dx, dy) in input pixels, at work scale."""
        start = _pixel_grid(self._r01)
        aligned = cv2.perspectiveTransform(start, self._h)
        end = aligned + _sample(self._r01, aligned)
        return np.asarray((end - start) * self._scale)

    def camera_at(self, t: float) -> np.ndarray:
        """The camera's motion from frame 0 to time t: a 3x3 homography in input pixels."""
        sx, sy = (float(v) for v in self._scale)
        # Work pixel centres map to input pixel centres: full = (work + 0.5) * scale - 0.5.
        to_full = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
        return np.asarray(to_full @ _expm(t * self._log) @ np.linalg.inv(to_full))

    def frame_at(self, t: float) -> np.ndarray:
        """The in-between frame at time t in [0, 1], at the inputs' size."""
        t = float(t)
        if t <= 0.0 or t >= 1.0:  # the ends are the inputs themselves, exactly
            return (self.first if t <= 0.0 else self.last).copy()
        self._maps(t)
        buf = self._buffers
        for image, points, warped in (
            (self.first, buf.map0, buf.warped0),
            (self.last, buf.map1, buf.warped1),
        ):
            cv2.convertMaps(points, _NO_MAP, cv2.CV_16SC2, dstmap1=buf.fixed, dstmap2=buf.fraction)
            cv2.remap(
                image, buf.fixed, buf.fraction, cv2.INTER_LINEAR, dst=warped, borderMode=_REPLICATE
            )
        return np.asarray(cv2.blendLinear(buf.warped0, buf.warped1, buf.weight0, buf.weight1))

    def _maps(self, t: float) -> None:
        """Fill the full-size sampling maps into both frames and their blend weights at t."""
        # Output pixel p at time t -> aligned (frame-1) coordinates y = H G_t^-1 p, where
        # G_t = H^t moves frame 0 to time t (even rotation and zoom, via the matrix log).
        to_aligned = self._h @ _expm(-t * self._log)
        aligned = cv2.perspectiveTransform(self._grid, to_aligned)
        # Trace p back into both frames twice: along frame 0's flow and along frame 1's.
        # At motion boundaries only one trace lands on the layer that is really in front.
        # The nearer frame's trace is favoured, so the ends join the inputs smoothly.
        x0, z0, score0 = self._trace(aligned, t, self._r01, self._r10, NEAR_BIAS * t)
        z1, x1, score1 = self._trace(aligned, 1 - t, self._r10, self._r01, NEAR_BIAS * (1 - t))
        pick = (score1 < score0)[..., None]
        x, z = np.where(pick, x1, x0), np.where(pick, z1, z0)
        s0 = cv2.perspectiveTransform(x, self._h_inv)
        # A frame's sample is doubted where the other frame sees the point and finds no
        # match for it: it was hidden there (occluded or revealed), so it must not ghost.
        valid0, valid1 = self._inside(s0), self._inside(z)
        doubt0 = valid1 * (1 - _sample(self._trust1, z))
        doubt1 = valid0 * (1 - _sample(self._trust0, x))
        w0 = (1 - t) * (valid0 * (1 - doubt0) + _EPS)
        w1 = t * (valid1 * (1 - doubt1) + _EPS)
        size, buf = (self.width, self.height), self._buffers
        for small, full in ((s0, buf.map0), (z, buf.map1), (w0, buf.weight0), (w1, buf.weight1)):
            if small.ndim == 3:
                small = self._to_full(small)
            cv2.resize(small, size, dst=full, interpolation=cv2.INTER_LINEAR)

    def _trace(
        self, target: np.ndarray, time: float, there: np.ndarray, back: np.ndarray, bias: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points `start`, `end` of one frame and the other that meet at `target` at `time`.

        Solves start + time * there(start) = target by fixed-point iteration, end = start +
        there(start); the score says how far the pair misses `target` and how it mismatches.
        """
        start = target
        for _ in range(TRACE_STEPS):
            start = target - time * _sample(there, start)
        step = _sample(there, start)
        end = start + step
        miss = np.linalg.norm(start + time * step - target, axis=2)
        miss += np.linalg.norm(end + (1 - time) * _sample(back, end) - target, axis=2)
        first, second = (
            (self._gray0, self._gray1) if there is self._r01 else (self._gray1, self._gray0)
        )
        contrast = np.abs(_sample(first, start) - _sample(second, end)) / GRAY_PER_PIXEL
        return start, end, miss + contrast + bias

    def _inside(self, points: np.ndarray) -> np.ndarray:
        """1 where work-scale points fall inside the frame, else 0."""
        ww, wh = self._work
        x, y = points[..., 0], points[..., 1]
        return ((x >= -0.5) & (x <= ww - 0.5) & (y >= -0.5) & (y <= wh - 0.5)).astype(np.float32)

    def _to_full(self, points: np.ndarray) -> np.ndarray:
        """Work-scale pixel coordinates as full-size ones, in place (pixel centres aligned)."""
        points += 0.5
        points *= self._scale
        points -= 0.5
        return points


class _Buffers:
    """Full-size scratch arrays reused for every frame.

    Fresh arrays this large are new pages from the kernel each time; reusing them
    roughly halves the per-frame cost. Fixed-point maps make remap about twice as fast.
    """

    def __init__(self, height: int, width: int):
        self.map0 = np.empty((height, width, 2), np.float32)
        self.map1 = np.empty((height, width, 2), np.float32)
        self.weight0 = np.empty((height, width), np.float32)
        self.weight1 = np.empty((height, width), np.float32)
        self.fixed = np.empty((height, width, 2), np.int16)
        self.fraction = np.empty((height, width), np.uint16)
        self.warped0 = np.empty((height, width, 3), np.uint8)
        self.warped1 = np.empty((height, width, 3), np.uint8)


_REPLICATE = cv2.BORDER_REPLICATE
_NO_MAP: Any = None  # cv2's stubs do not admit the documented "no second map"


def _sample(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear samples of `image` at (x, y) points, edges repeated."""
    return np.asarray(cv2.remap(image, points, _NO_MAP, cv2.INTER_LINEAR, borderMode=_REPLICATE))


def _gray(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))


def _matches(gray0: np.ndarray, gray1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched ORB keypoints (N x 2 each, frame 0 and frame 1), ratio-tested."""
    orb = cv2.ORB.create(nfeatures=3000, fastThreshold=10)
    kp0, des0 = orb.detectAndCompute(gray0, _NO_MAP)
    kp1, des1 = orb.detectAndCompute(gray1, _NO_MAP)
    if des0 is None or des1 is None or len(kp0) < 2 or len(kp1) < 2:
        return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des0, des1, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    src = np.array([kp0[m.queryIdx].pt for m in good], dtype=np.float32).reshape(-1, 2)
    dst = np.array([kp1[m.trainIdx].pt for m in good], dtype=np.float32).reshape(-1, 2)
    return src, dst


def camera_motion(
    gray0: np.ndarray, gray1: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The camera's homography between two gray frames (None: no reliable, non-trivial one)
    and the ORB matches it was fitted to (N x 2 points in frame 0 and in frame 1)."""
    src, dst = _matches(gray0, gray1)
    matrix = _homography(src, dst, gray0.shape)
    if _is_identity(matrix, (gray0.shape[1], gray0.shape[0])):
        matrix = None
    return matrix, src, dst


def _homography(src: np.ndarray, dst: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Homography taking frame-0 points to frame-1 points, or None when unreliable."""
    if len(src) < MIN_MATCHES:
        return None
    matrix, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 2.0, maxIters=4000, confidence=0.999)
    if matrix is None or inliers.sum() < max(MIN_MATCHES, MIN_INLIER_RATIO * len(src)):
        return None
    # Inliers bunched on one textured object describe that object, not the camera.
    hull = cv2.convexHull(src[inliers.ravel() > 0])
    if cv2.contourArea(hull) < MIN_COVERAGE * shape[0] * shape[1]:
        return None
    return np.asarray(matrix) if _plausible(matrix, shape) else None


def _object_motions(src: np.ndarray, dst: np.ndarray) -> list[np.ndarray]:
    """Motions (2x3 similarity) of things moving against the aligned scene, best-supported first.

    Matches the global model leaves unexplained are grouped by RANSAC, one group at a
    time; each group seeds the dense flow, which alone misses motion larger than detail.
    """
    left = np.linalg.norm(dst - src, axis=1) > OBJECT_MIN_SHIFT
    motions: list[np.ndarray] = []
    while len(motions) < MAX_OBJECTS and left.sum() >= MIN_OBJECT_MATCHES:
        model, inliers = cv2.estimateAffinePartial2D(
            src[left], dst[left], ransacReprojThreshold=2.0
        )
        if model is None or inliers.sum() < MIN_OBJECT_MATCHES:
            break
        motions.append(np.asarray(model))
        left[np.flatnonzero(left)[inliers.ravel() > 0]] = False
    return motions


def _seed_flow(
    gray0: np.ndarray, gray1: np.ndarray, motions: list[np.ndarray]
) -> np.ndarray | None:
    """Per pixel, the candidate motion (none, or one object's) that best explains gray1."""
    if not motions:
        return None
    grid = _pixel_grid(gray0)
    reference = gray0.astype(np.float32)

    def mismatch(field: np.ndarray) -> np.ndarray:
        diff = np.abs(_sample(gray1, grid + field).astype(np.float32) - reference)
        return np.asarray(cv2.blur(diff, (SEED_WINDOW, SEED_WINDOW)))

    seed = np.zeros_like(grid)
    best = mismatch(seed)
    for motion in motions:
        field = np.asarray(cv2.transform(grid, motion)) - grid
        error = mismatch(field) + SEED_PENALTY  # ties stay still: no motion is the default
        better = error < best
        seed[better], best = field[better], np.minimum(best, error)
    return seed


def _transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """N x 2 points through a homography."""
    return np.asarray(cv2.perspectiveTransform(points.reshape(-1, 1, 2), matrix)).reshape(-1, 2)


def _plausible(matrix: Any, shape: tuple[int, ...]) -> bool:
    """Reject degenerate fits: flips, extreme scale, strong perspective."""
    det = float(np.linalg.det(matrix[:2, :2]))
    h, w = shape[:2]
    return 0.25 < det < 4.0 and abs(matrix[2, 0]) * w + abs(matrix[2, 1]) * h < 0.3


def _matrix_log(matrix: np.ndarray) -> np.ndarray | None:
    """Real logarithm of the normalised homography, or None where it has none."""
    log = scipy.linalg.logm(matrix / np.cbrt(np.linalg.det(matrix)))
    if np.iscomplexobj(log):
        if np.abs(log.imag).max() > 1e-6:
            return None
        log = log.real
    return np.asarray(log, dtype=np.float64)


def _expm(matrix: np.ndarray) -> np.ndarray:
    """Matrix exponential of a 3x3 by scaling and squaring (scipy's costs ~100x more here)."""
    norm = float(np.abs(matrix).sum(axis=1).max())
    squarings = max(0, int(np.ceil(np.log2(norm / 0.25)))) if norm > 0 else 0
    scaled = matrix / 2.0**squarings
    term, result = np.eye(3), np.eye(3)
    for k in range(1, 10):
        term = term @ scaled / k
        result = result + term
    for _ in range(squarings):
        result = result @ result
    return result


def _is_identity(matrix: np.ndarray | None, size: tuple[int, int]) -> bool:
    """True when the homography moves no corner by half a work pixel."""
    if matrix is None:
        return True
    w, h = size
    corners = np.array([[[0, 0]], [[w, 0]], [[0, h]], [[w, h]]], dtype=np.float32)
    moved = cv2.perspectiveTransform(corners, matrix)
    return bool(np.abs(moved - corners).max() < 0.5)


def _dis_flow(gray0: np.ndarray, gray1: np.ndarray, seed: np.ndarray | None) -> np.ndarray:
    """Dense flow with gray0(p) ~ gray1(p + flow(p)), refined from `seed` when given."""
    # MEDIUM down to the finest scale: this runs once per job, at the working size.
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    return np.asarray(dis.calc(gray0, gray1, _NO_MAP if seed is None else seed))


def _pixel_grid(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.dstack([gx, gy])


def _grid(width: int, height: int, step: int) -> np.ndarray:
    """Work-pixel coordinates of the cell centres of a grid about `step` times coarser."""
    cols, rows = -(-width // step), -(-height // step)
    xs = (np.arange(cols, dtype=np.float32) + 0.5) * (width / cols) - 0.5
    ys = (np.arange(rows, dtype=np.float32) + 0.5) * (height / rows) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.dstack([gx, gy])


def _fb_error(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """|forward(p) + backward(p + forward(p))|: zero where both flows agree."""
    back = _sample(backward, _pixel_grid(forward) + forward)
    return np.asarray(np.linalg.norm(forward + back, axis=2))


def _trust(error: np.ndarray) -> np.ndarray:
    """Blend weight from forward-backward error: 1 when consistent, falling off past it."""
    trust = np.exp(-((error / (2.0 * FB_TOLERANCE)) ** 2)).astype(np.float32)
    # Flush the far tail to zero: subnormal floats make every later remap many times slower.
    trust[trust < 1e-6] = 0.0
    return trust


def _fill_hidden(flow: np.ndarray, trust: np.ndarray) -> np.ndarray:
    """Flow where it is trusted; elsewhere the flow of the nearby trusted, slowest layer.

    A pixel hidden in the other frame has no true match, and DIS smears the occluder's
    motion over it. Hidden pixels belong to the layer behind, and with camera motion
    already taken out by the homography that is the slower one.
    """
    speed = np.linalg.norm(flow, axis=2)
    weight = trust * np.exp(-speed / FILL_SPEED) + 1e-6
    size = (0, 0)
    sigma = max(flow.shape[:2]) / 32
    spread = cv2.GaussianBlur(flow * weight[..., None], size, sigma)
    total = cv2.GaussianBlur(weight, size, sigma)
    filled = spread / total[..., None]
    return np.asarray(flow * trust[..., None] + filled * (1 - trust[..., None]), dtype=np.float32)


def _residual(aligned: np.ndarray, gray1: np.ndarray, flow: np.ndarray) -> float:
    """Mean abs difference (0..1) between frame 0 and frame 1 carried back along the flow."""
    # Unrelated scenes still get a flow field; what gives them away is what it cannot match.
    carried = _sample(gray1, _pixel_grid(flow) + flow).astype(np.float32)
    return float(np.abs(carried - aligned.astype(np.float32)).mean() / 255.0)
