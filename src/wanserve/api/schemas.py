"""Wire schemas of the OpenAI-compatible `/v1` API (requests in, objects out)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MEDIA_TYPES = ("first_frame", "last_frame", "driving_audio")
TIERS = ("720P", "1080P")
_PIXEL_SIZE = re.compile(r"^\s*(\d{2,5})\s*[xX]\s*(\d{2,5})\s*$")
MAX_SEED = 2147483647
MIN_SECONDS, MAX_SECONDS = 2, 15
MAX_PROMPT_CHARS = 5000
MAX_NEGATIVE_PROMPT_CHARS = 500
# `WIDTHxHEIGHT` sizes: each side a multiple of PIXEL_STEP in PIXEL_SIDE, area capped.
PIXEL_SIDE = (240, 1920)
PIXEL_STEP = 8
MAX_PIXEL_AREA = 1920 * 1080


def parse_pixel_size(size: str) -> tuple[int, int] | None:
    """(width, height) of a `WIDTHxHEIGHT` size, or None when it is a tier name."""
    match = _PIXEL_SIZE.match(size)
    return (int(match.group(1)), int(match.group(2))) if match else None


def checked_pixel_size(pixels: tuple[int, int], separator: str = "x") -> str:
    """`WIDTHxHEIGHT` for sides that are multiples of 8 in 240..1920 within 1920x1080 pixels."""
    width, height = pixels
    low, high = PIXEL_SIDE
    if not all(low <= side <= high and side % PIXEL_STEP == 0 for side in pixels):
        raise ValueError(
            f"each side of size must be a multiple of {PIXEL_STEP} from {low} to {high}"
        )
    if width * height > MAX_PIXEL_AREA:
        raise ValueError(f"size must be at most 1920{separator}1080 pixels in area")
    return f"{width}x{height}"


class MediaItem(BaseModel):
    """One `{type, url}` entry of `media`."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["first_frame", "last_frame", "driving_audio"]
    url: str = Field(min_length=1, max_length=64 * 1024 * 1024)


class CreateVideoBody(BaseModel):
    """`POST /v1/videos` as JSON; multipart bodies are parsed into the same model."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=128, examples=["wan2.7-i2v"])
    media: list[MediaItem] = Field(
        description="first_frame and last_frame required, driving_audio optional, each once",
        max_length=3,
    )
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    size: str = Field(default="1080P", examples=["1080P", "720P", "1280x720"])
    seconds: int = Field(
        default=5, ge=MIN_SECONDS, le=MAX_SECONDS, description='integer 2..15, e.g. "5" or 5'
    )
    prompt_extend: bool = True
    watermark: bool = False
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_is_integer(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError('seconds must be an integer from 2 to 15, e.g. "5"')
        if isinstance(value, str) and not value.strip().isdigit():
            raise ValueError('seconds must be an integer from 2 to 15, e.g. "5"')
        return value

    @field_validator("seed", mode="before")
    @classmethod
    def _seed_is_integer(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("seed must be an integer")
        return value

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL text cannot hold NUL, and no prompt needs one.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("size")
    @classmethod
    def _size_is_known(cls, value: str) -> str:
        if value.strip().upper() in TIERS:
            return value.strip().upper()
        pixels = parse_pixel_size(value)
        if pixels is None:
            raise ValueError("size must be 720P, 1080P or WIDTHxHEIGHT such as 1280x720")
        return checked_pixel_size(pixels)


class RemixBody(BaseModel):
    """`POST /v1/videos/{id}/remix`."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)


class VideoError(BaseModel):
    """Why a video failed."""

    code: str
    message: str


class VideoObject(BaseModel):
    """The OpenAI-compatible video object."""

    id: str
    task_id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "unknown"]
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    error: VideoError | None = None
    prompt: str | None = None
    seconds: str
    size: str
    seed: int
    engine: str
    remixed_from_video_id: str | None = None
    video_url: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None


class VideoList(BaseModel):
    """A page of videos."""

    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    """Answer of `DELETE /v1/videos/{id}`."""

    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class ModelObject(BaseModel):
    """One served model, in OpenAI's shape."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """`GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    """OpenAI's error fields."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every `/v1` error body."""

    error: ErrorDetail
