"""FlowInterpolator: recovered motion, in-between quality, ends, and the correspondence test."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from wanserve.engines.flow import FlowInterpolator

WIDTH, HEIGHT = 256, 160


def _crop(image: np.ndarray, left: float, top: float) -> np.ndarray:
    """A WIDTH x HEIGHT window at a sub-pixel offset (bilinear), like a camera pan."""
    import cv2

    matrix = np.array([[1.0, 0.0, -left], [0.0, 1.0, -top]])
    return np.asarray(cv2.warpAffine(image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_LINEAR))


def _psnr(truth: np.ndarray, frame: np.ndarray, margin: int = 12) -> float:
    inner = (slice(margin, -margin), slice(margin, -margin))
    return float(peak_signal_noise_ratio(truth[inner], frame[inner], data_range=255))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[40:300, 60:400])


@pytest.fixture(scope="module")
def pan(photo: np.ndarray) -> tuple[FlowInterpolator, np.ndarray, np.ndarray, np.ndarray]:
    first, last = _crop(photo, 20, 30), _crop(photo, 34, 24)  # the scene moves (-14, +6)
    return FlowInterpolator(first, last), first, last, _crop(photo, 27, 27)


def test_known_translation_is_recovered_within_a_pixel(pan) -> None:
    interpolator = pan[0]
    field = interpolator.motion_field()
    inner = field[8:-8, 8:-8].reshape(-1, 2)
    assert np.abs(np.median(inner, axis=0) - [-14.0, 6.0]).max() < 0.5
    assert np.mean(np.linalg.norm(inner - [-14.0, 6.0], axis=1) < 1.0) > 0.95


def test_midpoint_matches_the_half_shifted_truth(pan) -> None:
    interpolator, first, last, middle = pan
    frame = interpolator.frame_at(0.5)
    crossfade = ((first.astype(np.float32) + last) / 2).round().astype(np.uint8)
    assert frame.shape == first.shape and frame.dtype == np.uint8
    assert _psnr(middle, frame) > 32.0
    assert _psnr(middle, frame) > _psnr(middle, crossfade) + 10.0


def test_ends_reproduce_the_inputs(pan) -> None:
    interpolator, first, last, _ = pan
    start, end = interpolator.frame_at(0.0), interpolator.frame_at(1.0)
    assert np.abs(start.astype(np.int16) - first).mean() < 1.0
    assert np.abs(end.astype(np.int16) - last).mean() < 1.0


def test_same_scene_corresponds(pan) -> None:
    assert pan[0].corresponds
    assert pan[0].consistency > 0.8


def test_unrelated_scenes_do_not_correspond(photo: np.ndarray) -> None:
    coffee = np.ascontiguousarray(data.coffee()[100:260, 100:356])
    interpolator = FlowInterpolator(_crop(photo, 20, 30), coffee)
    assert not interpolator.corresponds
    assert interpolator.consistency < 0.45


def test_object_moving_over_still_background_has_no_global_motion() -> None:
    background = np.ascontiguousarray(data.coffee()[100:260, 100:356])
    sprite = np.ascontiguousarray(data.astronaut()[60:120, 200:260])
    first, last, middle = background.copy(), background.copy(), background.copy()
    first[50:110, 40:100], last[50:110, 80:140], middle[50:110, 60:120] = sprite, sprite, sprite
    interpolator = FlowInterpolator(first, last)
    frame = interpolator.frame_at(0.5)
    crossfade = ((first.astype(np.float32) + last) / 2).round().astype(np.uint8)
    assert interpolator.homography is None
    assert _psnr(middle, frame) > _psnr(middle, crossfade) + 3.0


def test_rejects_mismatched_inputs(photo: np.ndarray) -> None:
    with pytest.raises(ValueError):
        FlowInterpolator(photo, photo[:-2])


@pytest.mark.parametrize(
    ("height", "width", "work_width"), [(8, 8, 640), (61, 97, 640), (96, 160, 16)]
)
def test_tiny_and_odd_sizes_still_interpolate(height: int, width: int, work_width: int) -> None:
    rng = np.random.default_rng(3)
    first = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    last = np.roll(first, 2, axis=1)
    interpolator = FlowInterpolator(first, last, work_width=work_width)
    assert interpolator.frame_at(0.5).shape == first.shape
    assert np.array_equal(interpolator.frame_at(0.0), first)
    assert np.array_equal(interpolator.frame_at(1.0), last)
