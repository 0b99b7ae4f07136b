"""Loading input frames for engines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wanserve.engines.frames import load_frame
from wanserve.errors import EngineError


def test_crop_follows_the_aspect_and_size_is_separate(tmp_path):
    # A 400x200 picture: left half red, right half blue, a green stripe in the middle.
    pixels = np.zeros((200, 400, 3), np.uint8)
    pixels[:, :200] = (255, 0, 0)
    pixels[:, 200:] = (0, 0, 255)
    pixels[:, 190:210] = (0, 255, 0)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    square = np.asarray(load_frame(path, (64, 64), param="p", aspect=(100, 100)))
    assert square.shape == (64, 64, 3)
    # The centred 200x200 crop keeps the stripe in the middle and both colours at the sides.
    assert square[32, 32, 1] > 200
    assert square[32, 2, 0] > 200 and square[32, 61, 2] > 200
    wide = np.asarray(load_frame(path, (80, 40), param="p"))
    assert wide.shape == (40, 80, 3) and wide[20, 1, 0] > 200


def test_a_broken_file_is_an_engine_error_naming_the_input(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(EngineError, match="first_frame"):
        load_frame(path, (64, 64), param="first_frame")
