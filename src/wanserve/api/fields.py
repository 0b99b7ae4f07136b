"""Wire field types that both API families share, each declared once with its checks.

Every text a client sends (body field, path id, query value, header) is one of these
types, so text that the database cannot store is refused as a 400 naming the field
wherever it arrives, before any route touches the store.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Header
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MediaType = Literal["first_frame", "last_frame", "driving_audio", "first_clip"]
MEDIA_TYPES: tuple[MediaType, ...] = ("first_frame", "last_frame", "driving_audio", "first_clip")
TIERS = ("720P", "1080P")
MAX_SEED = 2147483647
MIN_SECONDS, MAX_SECONDS = 2, 15
MAX_PROMPT_CHARS = 5000
MAX_NEGATIVE_PROMPT_CHARS = 500
MAX_URL = 64 * 1024 * 1024  # a data: URL of the largest image fits (clips: up to ~48 MB)
# `WIDTHxHEIGHT` sizes: each side a multiple of PIXEL_STEP in PIXEL_SIDE, area capped.
PIXEL_SIDE = (240, 1920)
PIXEL_STEP = 8
MAX_PIXEL_AREA = 1920 * 1080
# PostgreSQL text holds neither NUL nor half a surrogate pair (JSON's "\ud800" escape).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Tells schema readers (and schemathesis) that NUL is refused, so fuzzers send it.
_NO_NUL_SCHEMA: dict[str, Any] = {"pattern": "^[^\\u0000]*$"}
_PIXEL_SIZE = re.compile(r"^\s*(\d{2,5})\s*[xX]\s*(\d{2,5})\s*$")


def storable(value: str) -> str:
    """`value` unchanged, or ValueError when it holds characters no database can store."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return value
    if found.group() == "\x00":
        raise ValueError("must not contain NUL characters")
    raise ValueError("must not contain unpaired surrogate characters")


def _whole_number(value: Any) -> Any:
    # JSON true/false would otherwise pass as 1/0, and 5.5 would be cut to 5.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be an integer")
    return value


def _seconds(value: Any) -> Any:
    # "5" and 5 are both what clients send; "5.5", "five" and true are not seconds.
    if isinstance(value, str) and not value.strip().isdigit():
        raise ValueError(
            f'must be a whole number of seconds from {MIN_SECONDS} to {MAX_SECONDS}, such as "5"'
        )
    return _whole_number(value)


_STORABLE = AfterValidator(storable)

# Body fields. Length limits come before the NUL check so their messages stay pydantic's
# plain "String should have at most N characters".
Text = Annotated[str, Field(json_schema_extra=_NO_NUL_SCHEMA), _STORABLE]
ModelName = Annotated[
    str,
    Field(min_length=1, max_length=128, examples=["wan2.7-i2v"], json_schema_extra=_NO_NUL_SCHEMA),
    _STORABLE,
]
Prompt = Annotated[
    str, Field(max_length=MAX_PROMPT_CHARS, json_schema_extra=_NO_NUL_SCHEMA), _STORABLE
]
RequiredPrompt = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PROMPT_CHARS, json_schema_extra=_NO_NUL_SCHEMA),
    _STORABLE,
]
NegativePrompt = Annotated[
    str, Field(max_length=MAX_NEGATIVE_PROMPT_CHARS, json_schema_extra=_NO_NUL_SCHEMA), _STORABLE
]
MediaUrl = Annotated[
    str, Field(min_length=1, max_length=MAX_URL, json_schema_extra=_NO_NUL_SCHEMA), _STORABLE
]
Seconds = Annotated[int, BeforeValidator(_seconds), Field(ge=MIN_SECONDS, le=MAX_SECONDS)]
Seed = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_SEED)]

# Path ids, query values and headers: the same check, on what FastAPI hands the route.
ResourceId = Text
IdempotencyKey = Annotated[
    Annotated[str, Field(max_length=255, json_schema_extra=_NO_NUL_SCHEMA), _STORABLE] | None,
    Header(),
]


class MediaItem(BaseModel):
    """One `{type, url}` entry of a `media` list (`media` on /v1, `input.media` on DashScope)."""

    model_config = ConfigDict(extra="ignore")

    type: MediaType
    url: MediaUrl


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
