"""A visible "AI generated" mark in the bottom-right corner of each frame."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TEXT = "AI generated"
BOX_OPACITY = (
    110  # of 255: dark enough to read the text on a white sky, light enough to see through
)
TEXT_OPACITY = 230


@dataclass(frozen=True)
class Overlay:
    """A premultiplied RGBA patch and where it goes; blending it is a few integer ops."""

    top: int
    left: int
    color: np.ndarray  # (h, w, 3) uint16, colour * alpha
    keep: np.ndarray  # (h, w, 1) uint16, 255 - alpha


def apply_watermark(frame: np.ndarray) -> np.ndarray:
    """A copy of the RGB uint8 `frame` with the mark blended into its bottom-right corner."""
    overlay = overlay_for(frame.shape[0], frame.shape[1])
    out = frame.copy()
    bottom, right = overlay.top + overlay.keep.shape[0], overlay.left + overlay.keep.shape[1]
    region = out[overlay.top : bottom, overlay.left : right].astype(np.uint16)
    # x * (255 - a) + c * a, divided by 255 with rounding, all in uint16 (max 65025).
    blended = (region * overlay.keep + overlay.color + 127) // 255
    out[overlay.top : bottom, overlay.left : right] = blended.astype(np.uint8)
    return out


@lru_cache(maxsize=8)
def overlay_for(height: int, width: int) -> Overlay:
    """The mark for one frame size, drawn once and cached (a worker renders few sizes)."""
    font_size = max(10, round(min(height, width) * 0.035))
    font = ImageFont.load_default(size=font_size)
    left, top, right, bottom = (round(v) for v in font.getbbox(TEXT))
    pad = max(3, font_size // 2)
    box_w = min(width, right - left + 2 * pad)
    box_h = min(height, bottom - top + 2 * pad)
    patch = Image.new("RGBA", (box_w, box_h), (0, 0, 0, BOX_OPACITY))
    # Drawn on a separate layer then composited, so the text's alpha is not the box's.
    text = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    ImageDraw.Draw(text).text(
        (pad - left, pad - top), TEXT, font=font, fill=(255, 255, 255, TEXT_OPACITY)
    )
    patch = Image.alpha_composite(patch, text)
    rgba = np.asarray(patch, dtype=np.uint16)
    alpha = rgba[:, :, 3:4]
    margin = max(2, font_size // 2)
    return Overlay(
        top=max(0, height - box_h - margin),
        left=max(0, width - box_w - margin),
        color=rgba[:, :, :3] * alpha,
        keep=255 - alpha,
    )
