"""Wire schemas of the OpenAI-compatible `/v1` API (requests in, objects out)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from wanserve.api.fields import (
    TIERS,
    MediaItem,
    MediaUrl,
    ModelName,
    NegativePrompt,
    Prompt,
    RequiredPrompt,
    Seconds,
    Seed,
    Text,
    checked_pixel_size,
    parse_pixel_size,
)


def _reference_object(value: Any) -> Any:
    # Gateways pass the object along as JSON text, or give the bare URL.
    if isinstance(value, str):
        if value.lstrip().startswith("{"):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError("input_reference is not a valid JSON object") from exc
        return {"image_url": value}
    return value


class ImageReference(BaseModel):
    """OpenAI's JSON `input_reference`: the first frame by URL (or `data:` URL)."""

    model_config = ConfigDict(extra="ignore")

    image_url: MediaUrl | None = None
    file_id: Text | None = None


class CreateVideoBody(BaseModel):
    """`POST /v1/videos` as JSON; multipart bodies are parsed into the same model."""

    model_config = ConfigDict(extra="ignore")

    model: ModelName
    media: list[MediaItem] = Field(
        description="first_frame + last_frame, or first_clip (+ last_frame); "
        "driving_audio optional; each type once",
        max_length=3,
    )
    prompt: Prompt | None = None
    negative_prompt: NegativePrompt | None = None
    size: Annotated[Text, Field(examples=["1080P", "720P", "1280x720"])] = "1080P"
    seconds: Seconds = Field(default=5, description='integer 2..15, e.g. "5" or 5')
    prompt_extend: bool = True
    watermark: bool = False
    seed: Seed | None = None
    webhook_url: Annotated[Text, Field(max_length=2048)] | None = Field(
        default=None,
        description="http(s) endpoint told when this video completes or fails "
        "(Standard Webhooks, signed with the server's or the key's secret)",
    )
    input_reference: Annotated[ImageReference, BeforeValidator(_reference_object)] | None = Field(
        default=None, description='the first frame as {"image_url": ...} (OpenAI\'s JSON form)'
    )

    @field_validator("size")
    @classmethod
    def _size_is_known(cls, value: str) -> str:
        return known_size(value)


class VideoReference(BaseModel):
    """`{"id": ...}`: a completed video of the caller's key."""

    model_config = ConfigDict(extra="ignore")

    id: Annotated[Text, Field(min_length=1, max_length=255)]


class ExtendVideoBody(BaseModel):
    """`POST /v1/videos/extensions` (the openai SDK's `videos.extend`).

    `video` is a reference by id here; an uploaded clip comes as the multipart file part
    `video` instead.
    """

    model_config = ConfigDict(extra="ignore")

    video: VideoReference | None = None
    prompt: Prompt | None = None
    seconds: Seconds = Field(default=5, description="seconds of new video after the source")
    model: ModelName | None = Field(default=None, description="default: the source video's")
    size: Annotated[Text, Field(examples=["720P", "1280x720"])] | None = Field(
        default=None, description="default: the source video's (720P for an uploaded clip)"
    )
    negative_prompt: NegativePrompt | None = None
    seed: Seed | None = None
    prompt_extend: bool = True
    watermark: bool = False

    @field_validator("size")
    @classmethod
    def _size_is_known(cls, value: str | None) -> str | None:
        return None if value is None else known_size(value)


def known_size(value: str) -> str:
    """A tier name in upper case, or a checked `WIDTHxHEIGHT`."""
    if value.strip().upper() in TIERS:
        return value.strip().upper()
    pixels = parse_pixel_size(value)
    if pixels is None:
        raise ValueError("size must be 720P, 1080P or WIDTHxHEIGHT such as 1280x720")
    return checked_pixel_size(pixels)


class RemixBody(BaseModel):
    """`POST /v1/videos/{id}/remix`."""

    model_config = ConfigDict(extra="ignore")

    prompt: RequiredPrompt


class VideoError(BaseModel):
    """Why a video failed."""

    code: str
    message: str


class VideoOverflow(BaseModel):
    """A job that waited past its model's `max_wait` and ran on the overflow model."""

    from_model: str
    to_model: str
    from_engine: str


class VideoMetadata(BaseModel):
    """What a continued video was made from (the object's `seconds` is the new part)."""

    source_seconds: float = Field(description="length of the clip the video continues")
    extended_from_video_id: str | None = Field(
        default=None, description="the completed video it continues, when given by id"
    )


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
    overflow: VideoOverflow | None = None
    metadata: VideoMetadata | None = None


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


ERROR_TEXT = {
    400: "Invalid request (the param names the field)",
    401: "Missing or wrong API key",
    404: "No such video for this API key",
    413: "Request body too large",
    429: "Too many requests for this API key (create rate, unfinished videos or open streams)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of `/v1` error answers with these statuses."""
    return {s: {"model": ErrorBody, "description": ERROR_TEXT[s]} for s in statuses}


class WorkerObject(BaseModel):
    """One live worker process of the fleet."""

    id: str
    object: Literal["worker"] = "worker"
    host: str
    pid: int
    models: list[str]
    device: str
    engines: dict[str, str] = Field(
        description="each served model's engine: not_loaded, loading, loaded or failed"
    )
    current_job: str | None
    started_at: int
    last_heartbeat_at: float


class WorkerList(BaseModel):
    """`GET /v1/workers`."""

    object: Literal["list"] = "list"
    data: list[WorkerObject]
