"""Preview sampling: evenly spaced tiles, a middle thumbnail, small copies only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from render_samples import gradient_frame

from wanserve.errors import EngineError
from wanserve.render.preview import PreviewSampler, sample_indices


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, [0]), (3, [0, 1, 2]), (48, None), (360, None)],
)
def test_indices_are_even_from_first_to_last(count: int, expected: list[int] | None) -> None:
    indices = sample_indices(count)
    if expected is not None:
        assert indices == expected
    else:
        assert len(indices) == 25 and indices[0] == 0 and indices[-1] == count - 1
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= 1


def test_sampler_keeps_downscaled_copies_and_writes_both_files(tmp_path: Path) -> None:
    sampler = PreviewSampler(100)
    for index in range(100):
        sampler.offer(index, gradient_frame(index, 1920, 1080))
    sampler.save(tmp_path / "thumbnail.webp", tmp_path / "spritesheet.jpg")
    with Image.open(tmp_path / "thumbnail.webp") as thumbnail:
        assert (thumbnail.format, thumbnail.size) == ("WEBP", (640, 360))
    with Image.open(tmp_path / "spritesheet.jpg") as sheet:
        assert (sheet.format, sheet.size) == ("JPEG", (5 * 160, 5 * 90))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spritesheet.jpg", "thumbnail.webp"]


def test_short_stream_still_gets_a_thumbnail(tmp_path: Path) -> None:
    sampler = PreviewSampler(100)
    sampler.offer(0, gradient_frame(0, 320, 240))  # the engine stopped early
    sampler.save(tmp_path / "t.webp", tmp_path / "s.jpg")
    assert (tmp_path / "t.webp").exists()


def test_no_frames_no_previews(tmp_path: Path) -> None:
    with pytest.raises(EngineError):
        PreviewSampler(10).save(tmp_path / "t.webp", tmp_path / "s.jpg")
