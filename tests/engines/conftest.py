"""Tiny Wan checkpoints and input frames shared by the diffusers engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("diffusers")
    import tiny_wan

    root = tmp_path_factory.mktemp("tiny-wan")
    return {
        layout: tiny_wan.build_tiny_pipeline(layout, root / layout) for layout in tiny_wan.LAYOUTS
    }


@pytest.fixture(scope="session")
def tiny_lora(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tiny_wan

    folder = tmp_path_factory.mktemp("tiny-lora")
    return tiny_wan.build_tiny_lora(tiny_models["wan2.2-a14b"], folder)


@pytest.fixture(scope="session")
def frames_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for name, shape in (("first.png", (80, 96, 3)), ("last.png", (90, 90, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    return folder
