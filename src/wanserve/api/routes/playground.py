"""The playground page, its static files, and the limits it checks inputs against.

The limits are the validators' own constants and this server's settings, so the page
refuses in the browser exactly what the server would refuse, without copying numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.staticfiles import StaticFiles

from wanserve.api.fields import (
    MAX_NEGATIVE_PROMPT_CHARS,
    MAX_PIXEL_AREA,
    MAX_PROMPT_CHARS,
    MAX_SECONDS,
    MAX_SEED,
    MIN_SECONDS,
    PIXEL_SIDE,
    PIXEL_STEP,
    TIERS,
)
from wanserve.api.schemas import CreateVideoBody
from wanserve.api.services import Services, services
from wanserve.media import probe
from wanserve.settings import DEFAULT_MODEL

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(tags=["playground"])
Svc = Annotated[Services, Depends(services)]


class SizeLimits(BaseModel):
    """`size`: a tier name, or `WIDTHxHEIGHT` within these bounds."""

    tiers: list[str]
    default: str
    pixel_side_min: int
    pixel_side_max: int
    pixel_step: int
    max_pixel_area: int


class IntegerRange(BaseModel):
    """An inclusive integer range, with the server's default where it has one."""

    min: int
    max: int
    default: int | None = None


class ImageLimits(BaseModel):
    """What a first or last frame must be."""

    max_bytes: int
    min_side: int
    max_side: int
    max_aspect: float


class AudioLimits(BaseModel):
    """What a driving audio must be."""

    max_bytes: int
    min_seconds: float
    max_seconds: float


class PlaygroundConfig(BaseModel):
    """`GET /playground/config`: this server's create limits, for checks in the page."""

    auth_required: bool
    default_model: str
    prompt_max_chars: int
    negative_prompt_max_chars: int
    size: SizeLimits
    seconds: IntegerRange
    seed: IntegerRange
    image: ImageLimits
    audio: AudioLimits
    max_upload_bytes: int
    poll_after_ms: int


def static_files() -> StaticFiles:
    """The page's stylesheet and scripts (served at `/static`, public)."""
    return StaticFiles(directory=STATIC)


@router.get("/", include_in_schema=False)
def playground() -> FileResponse:
    """A page to submit and watch jobs from a browser."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/playground/config", response_model=PlaygroundConfig)
def playground_config(svc: Svc) -> PlaygroundConfig:
    """The limits the playground checks before it sends a create request (public)."""
    settings = svc.settings
    defaults = CreateVideoBody.model_fields
    return PlaygroundConfig(
        auth_required=not svc.keys.open,
        default_model=DEFAULT_MODEL,
        prompt_max_chars=MAX_PROMPT_CHARS,
        negative_prompt_max_chars=MAX_NEGATIVE_PROMPT_CHARS,
        size=SizeLimits(
            tiers=list(TIERS),
            default=defaults["size"].default,
            pixel_side_min=PIXEL_SIDE[0],
            pixel_side_max=PIXEL_SIDE[1],
            pixel_step=PIXEL_STEP,
            max_pixel_area=MAX_PIXEL_AREA,
        ),
        seconds=IntegerRange(min=MIN_SECONDS, max=MAX_SECONDS, default=defaults["seconds"].default),
        seed=IntegerRange(min=0, max=MAX_SEED),
        image=ImageLimits(
            max_bytes=settings.max_image_bytes,
            min_side=probe.MIN_SIDE,
            max_side=probe.MAX_SIDE,
            max_aspect=probe.MAX_ASPECT,
        ),
        audio=AudioLimits(
            max_bytes=settings.max_audio_bytes,
            min_seconds=probe.MIN_AUDIO_SECONDS,
            max_seconds=probe.MAX_AUDIO_SECONDS,
        ),
        max_upload_bytes=settings.max_multipart_body,
        poll_after_ms=settings.poll_after_ms,
    )
