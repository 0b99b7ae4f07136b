"""The one interface between the job core and every engine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class MediaInput:
    """One validated input, already on local disk."""

    path: Path
    content_type: str
    source_url: str | None = None  # the client's own http(s) URL, when it gave one
    duration: float | None = None  # seconds, of audio and clips


@dataclass(frozen=True)
class GenerationRequest:
    """Everything an engine needs for one video; sizes are already final.

    A continuation (`first_clip` given) asks for the `seconds` that follow the clip:
    `first_frame` is then the clip's last frame, `last_frame` is optional, and the worker
    puts the clip itself before the engine's frames (an engine that returns a finished
    `VideoFile` returns the whole continued video instead).
    """

    job_id: str
    model: str
    prompt: str
    negative_prompt: str
    first_frame: MediaInput
    last_frame: MediaInput | None
    driving_audio: MediaInput | None
    width: int
    height: int
    seconds: int
    seed: int
    prompt_extend: bool = True
    watermark: bool = False
    size_label: str = "1080P"  # as the client gave it: "720P", "1080P" or "WxH"
    options: Mapping[str, Any] = field(default_factory=dict)  # per-model engine options
    first_clip: MediaInput | None = None  # the video being continued


class EngineContext(Protocol):
    """What the worker lends an engine while it runs one job."""

    work_dir: Path  # private scratch folder for this attempt, removed afterwards

    def report_progress(self, fraction: float) -> None:
        """Record progress in [0, 1]; lower values than before are ignored."""

    def raise_if_cancelled(self) -> None:
        """Raise `JobCancelled` if the job was cancelled or deleted; cheap to call often."""

    @property
    def state(self) -> Mapping[str, Any]:
        """What this engine saved for this job in an earlier attempt (empty at first)."""

    def save_state(self, state: Mapping[str, Any]) -> None:
        """Persist engine state durably before returning (e.g. a provider's task id)."""


@dataclass
class FrameStream:
    """Frames produced lazily: RGB uint8 arrays of shape (height, width, 3)."""

    fps: float
    frame_count: int
    frames: Iterator[np.ndarray]
    metadata: dict[str, Any] = field(default_factory=dict)
    # Share of the job already done when the first frame comes out (e.g. after denoising);
    # the worker spreads the rest over the frames as they are encoded.
    progress_start: float = 0.0


@dataclass
class VideoFile:
    """A finished MP4 made elsewhere (an upstream provider); audio and watermark included."""

    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)


EngineOutput = FrameStream | VideoFile


class Engine(Protocol):
    """A video generator. One instance serves many jobs, one at a time per worker."""

    name: str

    def generate(self, request: GenerationRequest, context: EngineContext) -> EngineOutput:
        """Produce the video for `request`, reporting progress and honouring cancel."""

    def close(self) -> None:
        """Release models, sessions and other resources."""
