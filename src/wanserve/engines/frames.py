"""Loading an input frame the way every engine needs it: upright, cropped, sized."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from wanserve.errors import EngineError
from wanserve.render.geometry import center_crop_box

_ORIENTATION = 0x0112  # EXIF tag
_QUARTER_TURNS = (5, 6, 7, 8)


def load_frame(
    path: Path, size: tuple[int, int], *, param: str, aspect: tuple[int, int] | None = None
) -> Image.Image:
    """An input image as RGB at `size`: upright per EXIF, centre-cropped to the aspect of
    `aspect` (default: `size` itself) first."""
    try:
        with Image.open(path) as image:
            # JPEG decodes straight at a reduced scale when it can (sides as stored).
            turned = image.getexif().get(_ORIENTATION, 1) in _QUARTER_TURNS
            image.draft("RGB", size[::-1] if turned else size)
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise EngineError(f"the {param} cannot be decoded as an image") from exc
    box = center_crop_box(upright.width, upright.height, *(aspect or size))
    return upright.resize(size, Image.Resampling.LANCZOS, box=box)
