"""The watermark: visible, bottom-right only, scaled to the frame, drawn once per size."""

from __future__ import annotations

import numpy as np
import pytest

from wanserve.render.watermark import apply_watermark, overlay_for


@pytest.mark.parametrize(("height", "width"), [(240, 320), (720, 1280), (1920, 1080)])
def test_changes_only_the_bottom_right_corner(height: int, width: int) -> None:
    frame = np.full((height, width, 3), 128, dtype=np.uint8)
    marked = apply_watermark(frame)
    changed = np.argwhere((marked != frame).any(axis=2))
    top, left = changed.min(axis=0)
    assert top > height * 0.8 and left > width * 0.5
    assert np.array_equal(frame, np.full_like(frame, 128))  # the input is not modified


def test_mark_is_semi_transparent() -> None:
    black, white = np.zeros((360, 640, 3), np.uint8), np.full((360, 640, 3), 255, np.uint8)
    box = overlay_for(360, 640)
    corner = (slice(box.top, box.top + 3), slice(box.left, box.left + 3))  # box, not text
    on_black, on_white = apply_watermark(black)[corner], apply_watermark(white)[corner]
    assert on_black.max() < on_white.min()  # the background shows through the box
    assert on_white.min() > 0 and on_white.max() < 255  # and is darkened by it


def test_mark_scales_with_the_frame() -> None:
    small, large = overlay_for(240, 320), overlay_for(1080, 1920)
    assert large.keep.shape[0] > 3 * small.keep.shape[0]
    assert overlay_for(240, 320) is small  # cached: drawn once per size
