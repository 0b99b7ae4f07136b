"""Shared pieces of the diffusers engine tests: tiny settings, a recording context, requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wanserve.engines.base import GenerationRequest, MediaInput
from wanserve.engines.diffusers import DiffusersEngine, DiffusersSettings
from wanserve.errors import JobCancelled

TINY = {
    "steps": 2,
    "frame_budget": 9,
    "max_area": 64 * 64,
    "device": "cpu",
    "interpolation_width": 64,
}


class Context:
    """An EngineContext that records progress and can cancel at a given step."""

    def __init__(self, tmp: Path, cancel_at_check: int | None = None):
        self.work_dir = tmp
        self.progress: list[float] = []
        self.checks = 0
        self.cancel_at_check = cancel_at_check

    def report_progress(self, fraction: float) -> None:
        self.progress.append(fraction)

    def raise_if_cancelled(self) -> None:
        self.checks += 1
        if self.cancel_at_check is not None and self.checks >= self.cancel_at_check:
            raise JobCancelled()

    @property
    def state(self) -> dict[str, Any]:
        return {}

    def save_state(self, state: Any) -> None:
        pass


class CrossFade:
    """A plain cross-fade in-betweener: keeps these tests off the flow estimator's cost."""

    def __init__(self, first: np.ndarray, last: np.ndarray):
        self.first, self.last = first.astype(np.float32), last.astype(np.float32)

    def frame_at(self, t: float) -> np.ndarray:
        return np.round((1 - t) * self.first + t * self.last).astype(np.uint8)


def _engine(model: Path, interpolator: Any = CrossFade, **settings: Any) -> DiffusersEngine:
    settings = TINY | settings
    return DiffusersEngine(
        DiffusersSettings(model=str(model), **settings), interpolator=interpolator
    )


def _request(frames_dir: Path, **fields: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "job_id": "video_test",
        "model": "wan-open",
        "prompt": "a cat walks",
        "negative_prompt": "",
        "first_frame": MediaInput(frames_dir / "first.png", "image/png"),
        "last_frame": MediaInput(frames_dir / "last.png", "image/png"),
        "driving_audio": None,
        "width": 64,
        "height": 64,
        "seconds": 2,
        "seed": 7,
        "prompt_extend": False,
        "size_label": "64x64",
    }
    return GenerationRequest(**(values | fields))


def frames_of(engine: DiffusersEngine, request: GenerationRequest, tmp: Path) -> np.ndarray:
    """All output frames of one job, stacked."""
    stream = engine.generate(request, Context(tmp))
    return np.stack(list(stream.frames))
