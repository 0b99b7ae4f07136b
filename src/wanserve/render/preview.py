"""Thumbnail (WebP) and spritesheet (JPEG grid) from frames sampled while encoding."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from wanserve.errors import EngineError

MAX_TILES = 25  # a 5x5 grid whatever the length: players scrub through it evenly
TILE_WIDTH = 160
THUMBNAIL_MAX_SIDE = 640


def sample_indices(frame_count: int, tiles: int = MAX_TILES) -> list[int]:
    """Up to `tiles` evenly spaced frame indices from first to last."""
    if frame_count <= 0:
        return []
    count = min(frame_count, tiles)
    return sorted({round(i * (frame_count - 1) / max(1, count - 1)) for i in range(count)})


def _downscale(rgb: np.ndarray, max_width: int, max_height: int) -> Image.Image:
    image = Image.fromarray(rgb)
    image.thumbnail((max_width, max_height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image


class PreviewSampler:
    """Keeps small copies of the few frames the previews need, never the frames themselves."""

    def __init__(self, frame_count: int):
        self._sprite_indices = set(sample_indices(frame_count))
        self._thumbnail_index = frame_count // 2  # the middle shows more than the input frame
        self._tiles: list[Image.Image] = []
        self._thumbnail: Image.Image | None = None

    def wants(self, index: int) -> bool:
        """Whether frame `index` is used for a preview (decoders can skip converting others)."""
        return index in self._sprite_indices or index == self._thumbnail_index

    def offer(self, index: int, rgb: np.ndarray) -> None:
        """Look at frame `index`; keeps a downscaled copy only when a preview uses it."""
        if index in self._sprite_indices:
            self._tiles.append(_downscale(rgb, TILE_WIDTH, TILE_WIDTH * 4))
        if index == self._thumbnail_index:
            self._thumbnail = _downscale(rgb, THUMBNAIL_MAX_SIDE, THUMBNAIL_MAX_SIDE)

    def save(self, thumbnail_path: Path, spritesheet_path: Path) -> None:
        """Write the thumbnail and the spritesheet, each under a temp name then renamed."""
        if not self._tiles:
            raise EngineError("no frames to make previews from")
        # A stream shorter than announced never reaches the middle: use its last sample.
        thumbnail = self._thumbnail or self._tiles[-1]
        _save_atomic(thumbnail, thumbnail_path, "WEBP", quality=80, method=4)
        _save_atomic(spritesheet(self._tiles), spritesheet_path, "JPEG", quality=80)


def spritesheet(tiles: list[Image.Image]) -> Image.Image:
    """The tiles in a near-square grid, row by row, on black."""
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    tile_w, tile_h = tiles[0].size
    sheet = Image.new("RGB", (columns * tile_w, rows * tile_h))
    for position, tile in enumerate(tiles):
        row, column = divmod(position, columns)
        sheet.paste(tile, (column * tile_w, row * tile_h))
    return sheet


def _save_atomic(image: Image.Image, path: Path, image_format: str, **params: int) -> None:
    partial = path.with_name(f".{path.name}.partial")
    try:
        image.save(partial, format=image_format, **params)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def decode_frames(path: Path, wanted: PreviewSampler | None = None) -> Iterator[np.ndarray | None]:
    """Decode the first video stream of `path`: RGB arrays, or None where `wanted` skips them."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if wanted is None or wanted.wants(index):
                    yield frame.to_ndarray(format="rgb24")
                else:
                    yield None
    except (av.FFmpegError, IndexError) as exc:
        raise EngineError("the video cannot be decoded") from exc


def previews_from_file(
    path: Path, frame_count: int, thumbnail_path: Path, spritesheet_path: Path
) -> int:
    """Decode a finished video once to make its previews; returns the frames decoded."""
    sampler = PreviewSampler(frame_count)
    decoded = 0
    for index, rgb in enumerate(decode_frames(path, sampler)):
        if rgb is not None:
            sampler.offer(index, rgb)
        decoded = index + 1
    sampler.save(thumbnail_path, spritesheet_path)
    return decoded
