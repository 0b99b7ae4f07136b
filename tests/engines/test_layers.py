"""Moving objects as layers: found, matched however far they went, carried without ghosts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from wanserve.engines.composite import LayeredMotion
from wanserve.engines.flow import FlowInterpolator
from wanserve.engines.keyframe import choose_motion
from wanserve.engines.layers import find_layers

WIDTH, HEIGHT = 480, 270
SPRITE = (96, 64)  # the cat's face, width x height


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return np.asarray(cv2.resize(data.coffee(), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def sprite() -> np.ndarray:
    cat = np.ascontiguousarray(data.chelsea()[20:280, 60:420])
    return np.asarray(cv2.resize(cat, SPRITE, interpolation=cv2.INTER_AREA))


def _paste(background: np.ndarray, sprite: np.ndarray, x: int, y: int) -> np.ndarray:
    frame = background.copy()
    frame[y : y + sprite.shape[0], x : x + sprite.shape[1]] = sprite
    return frame


def _find(frame: np.ndarray, sprite: np.ndarray) -> tuple[tuple[int, int], float]:
    """Top-left corner of the best match of `sprite` in `frame`, and its NCC."""
    scores = cv2.matchTemplate(frame, sprite, cv2.TM_CCOEFF_NORMED)
    _, best, _, where = cv2.minMaxLoc(scores)
    return (int(where[0]), int(where[1])), float(best)


def test_known_displacement_is_recovered_within_two_pixels(background, sprite) -> None:
    first = _paste(background, sprite, 30, 40)
    last = _paste(background, sprite, 30 + 217, 40 + 93)
    scene = find_layers(first, last, work_width=WIDTH)
    assert scene is not None and len(scene.layers) == 1
    dx, dy = scene.layers[0].summary()["displacement"]
    assert abs(dx - 217) <= 2 and abs(dy - 93) <= 2


def test_middle_of_a_large_move_has_the_object_halfway_and_no_ghost(background, sprite) -> None:
    start, end = (20, 180), (360, 30)  # about 70% of the frame's width, and up
    first, last = _paste(background, sprite, *start), _paste(background, sprite, *end)
    scene = find_layers(first, last, work_width=WIDTH)
    assert scene is not None
    motion = LayeredMotion(first, last, scene, FlowInterpolator(scene.plate0, scene.plate1))
    middle = motion.frame_at(0.5)
    (x, y), score = _find(middle, sprite)
    halfway = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    assert score > 0.9
    assert np.hypot(x - halfway[0], y - halfway[1]) <= 0.04 * WIDTH
    w, h = SPRITE
    for x0, y0 in (start, end):  # where it stood at either end, the background shows
        seen = middle[y0 : y0 + h, x0 : x0 + w]
        behind = background[y0 : y0 + h, x0 : x0 + w]
        error = np.abs(seen.astype(np.float32) - behind).mean()
        faint_ghost = np.abs(sprite.astype(np.float32) - behind).mean() * 0.2  # 20% opacity
        assert error < 6.0 and error < 0.5 * faint_ghost


def test_ends_are_the_inputs(background, sprite) -> None:
    first, last = _paste(background, sprite, 40, 60), _paste(background, sprite, 300, 150)
    scene = find_layers(first, last, work_width=WIDTH)
    assert scene is not None
    motion = LayeredMotion(first, last, scene, FlowInterpolator(scene.plate0, scene.plate1))
    assert np.array_equal(motion.frame_at(0.0), first)
    assert np.array_equal(motion.frame_at(1.0), last)


def test_camera_motion_alone_finds_no_objects() -> None:
    photo = data.astronaut()
    first = np.ascontiguousarray(photo[100:292, 80:400])
    last = np.ascontiguousarray(photo[108:300, 104:424])
    assert find_layers(first, last, work_width=320) is None
    _, metadata = choose_motion(first, last, work_width=320, seed=0)
    assert metadata["interpolation"] == "flow" and metadata["objects"] == []


def test_the_path_is_in_the_metadata(background, sprite) -> None:
    first = _paste(background, sprite, 30, 40)
    last = _paste(background, sprite, 330, 140)
    _, metadata = choose_motion(first, last, work_width=WIDTH, seed=0)
    assert metadata["interpolation"] == "layers"
    [found] = metadata["objects"]
    assert found["displacement"] == pytest.approx([300, 100], abs=2)
    assert found["from"] == pytest.approx([30 + 47.5, 40 + 31.5], abs=3)
    assert found["scale"] == pytest.approx(1.0, abs=0.02)


def _posed(shift: int) -> np.ndarray:
    """The cat's face with its lower half (the "legs") moved `shift` source pixels right."""
    cat = np.ascontiguousarray(data.chelsea()[20:280, 20:451])
    face = cat[:, 40:400].copy()
    face[130:] = cat[130:, 40 - shift : 400 - shift]
    return np.asarray(cv2.resize(face, SPRITE, interpolation=cv2.INTER_AREA))


def test_a_changed_pose_morphs_instead_of_double_exposing(background) -> None:
    first = _paste(background, _posed(0), 30, 40)
    last = _paste(background, _posed(40), 300, 150)
    truth = _posed(20)
    scene = find_layers(first, last, work_width=WIDTH)
    assert scene is not None
    plates = FlowInterpolator(scene.plate0, scene.plate1)
    errors = []
    for morph in (True, False):
        middle = LayeredMotion(first, last, scene, plates, morph=morph).frame_at(0.5)
        seen = middle[95 : 95 + SPRITE[1], 165 : 165 + SPRITE[0]].astype(np.float32)
        errors.append(np.abs(seen - truth).mean())
    assert errors[0] < 0.8 * errors[1], errors


def test_an_object_that_turns_and_grows_is_followed(background, sprite) -> None:
    """Placed by a similarity: the metadata's turn and scale are the ones it was given."""
    h, w = sprite.shape[:2]

    def placed(x: float, y: float, angle: float, scale: float) -> np.ndarray:
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        matrix[:, 2] += (x - w / 2, y - h / 2)
        layer = cv2.warpAffine(sprite, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR)
        inside = cv2.warpAffine(np.ones((h, w), np.float32), matrix, (WIDTH, HEIGHT)) > 0.5
        frame = background.copy()
        frame[inside] = layer[inside]
        return frame

    first, last = placed(100, 90, 0, 1.0), placed(340, 170, 20, 1.3)
    motion, metadata = choose_motion(first, last, work_width=WIDTH, seed=0)
    [found] = metadata["objects"]
    assert found["scale"] == pytest.approx(1.3, abs=0.03)
    assert found["angle"] == pytest.approx(-20, abs=1.5)  # clockwise; OpenCV's anticlockwise
    truth = placed(220, 130, 10, np.sqrt(1.3))
    middle = motion.frame_at(0.5)
    box = (slice(90, 170), slice(160, 280))
    error = np.abs(middle[box].astype(np.float32) - truth[box]).mean()
    crossfade = np.abs((first[box] / 2 + last[box] / 2) - truth[box]).mean()
    assert error < 0.3 * crossfade


def test_a_smooth_object_features_miss_is_matched_by_template(background) -> None:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]

    def ball(cx: int, cy: int) -> np.ndarray:
        """A shaded plain blue ball: nothing on it for ORB to match."""
        alpha = np.clip(30 - np.hypot(xx - cx, yy - cy), 0, 1)[..., None]
        shade = np.clip(1 - np.hypot(xx - cx + 8, yy - cy + 8) / 60, 0.3, 1)[..., None]
        colour = np.array([60, 120, 230], np.float32) * shade
        frame = background * (1 - alpha) + colour * alpha
        return np.clip(frame + 0.5, 0, 255).astype(np.uint8)

    first, last = ball(60, 200), ball(380, 80)
    scene = find_layers(first, last, work_width=WIDTH)
    assert scene is not None and len(scene.layers) == 1
    assert scene.layers[0].summary()["displacement"] == pytest.approx([320, -120], abs=2)
    motion = LayeredMotion(first, last, scene, FlowInterpolator(scene.plate0, scene.plate1))
    middle = motion.frame_at(0.5).astype(np.float32)
    assert np.abs(middle - ball(220, 140)).mean() < 1.0
