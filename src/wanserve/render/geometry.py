"""Output-size rules of API.md: aspect of the first frame at a tier's pixel budget."""

from __future__ import annotations

import math

TIER_PIXELS = {"720P": 1280 * 720, "1080P": 1920 * 1080}


def _multiple_of(value: float, step: int) -> int:
    return max(step, round(value / step) * step)


def tier_size(source_width: int, source_height: int, tier: str) -> tuple[int, int]:
    """(width, height) with the source's aspect at about the tier's area, sides multiple of 8.

    16:9 gives exactly 1280x720 / 1920x1080, 9:16 the transpose, 1:1 960x960 / 1440x1440.
    """
    area = TIER_PIXELS[tier.upper()]
    aspect = source_width / source_height
    return _multiple_of(math.sqrt(area * aspect), 8), _multiple_of(math.sqrt(area / aspect), 8)


def center_crop_box(
    source_width: int, source_height: int, target_width: int, target_height: int
) -> tuple[int, int, int, int]:
    """The largest centred (left, top, right, bottom) box of the source with the target aspect."""
    target_aspect = target_width / target_height
    if source_width / source_height > target_aspect:
        width = round(source_height * target_aspect)
        left = (source_width - width) // 2
        return left, 0, left + width, source_height
    height = round(source_width / target_aspect)
    top = (source_height - height) // 2
    return 0, top, source_width, top + height
