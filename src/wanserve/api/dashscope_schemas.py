"""Wire schemas of the DashScope-compatible `/api/v1` routes (video synthesis and tasks).

The create body follows DashScope's video-synthesis protocol: `{model, input, parameters}`.
`input` carries the media either as wan2.7's `media` list or as the older single-URL
fields the `dashscope` SDK still sends (`img_url`, `first_frame_url`, `last_frame_url`,
`head_frame`, `tail_frame`, `audio_url`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wanserve.api.fields import (
    TIERS,
    MediaItem,
    MediaUrl,
    ModelName,
    NegativePrompt,
    Prompt,
    Seconds,
    Seed,
    Text,
    checked_pixel_size,
    parse_pixel_size,
)
from wanserve.errors import InvalidRequest
from wanserve.jobs.intake import CreateRequest, MediaSource

TaskStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]

# Older single-URL input fields, in the order they become media, and the type each gives.
LEGACY_MEDIA_FIELDS = {
    "img_url": "first_frame",
    "first_frame_url": "first_frame",
    "head_frame": "first_frame",
    "last_frame_url": "last_frame",
    "tail_frame": "last_frame",
    "audio_url": "driving_audio",
}


class SynthesisInput(BaseModel):
    """`input` of a video-synthesis request."""

    model_config = ConfigDict(extra="ignore")

    prompt: Prompt | None = None
    negative_prompt: NegativePrompt | None = None
    media: list[MediaItem] | None = Field(
        default=None,
        max_length=3,
        description="first_frame + last_frame, or first_clip (+ last_frame); "
        "driving_audio optional",
    )
    img_url: MediaUrl | None = None
    first_frame_url: MediaUrl | None = None
    head_frame: MediaUrl | None = None
    last_frame_url: MediaUrl | None = None
    tail_frame: MediaUrl | None = None
    audio_url: MediaUrl | None = None
    extend_prompt: bool | None = Field(
        default=None, description="1.x spelling of parameters.prompt_extend (deprecated)"
    )

    def media_sources(self) -> list[MediaSource]:
        """Every media input, with the parameter name that errors about it should name."""
        sources = [
            MediaSource(type=item.type, param=f"input.media[{i}].url", url=item.url)
            for i, item in enumerate(self.media or [])
        ]
        for name, media_type in LEGACY_MEDIA_FIELDS.items():
            url = getattr(self, name)
            if url is None:
                continue
            taken = next((s for s in sources if s.type == media_type), None)
            if taken is not None:
                raise InvalidRequest(
                    f"input.{name} gives a {media_type}, and {taken.param} already does.",
                    param=f"input.{name}",
                )
            sources.append(MediaSource(type=media_type, param=f"input.{name}", url=url))
        return sources


class SynthesisParameters(BaseModel):
    """`parameters` of a video-synthesis request."""

    model_config = ConfigDict(extra="ignore")

    resolution: Annotated[Text, Field(examples=["720P", "1080P"])] | None = None
    size: Annotated[Text, Field(examples=["1280*720"])] | None = None
    duration: Seconds = Field(
        default=5, description="seconds of the whole output (with a first_clip, the clip counts)"
    )
    prompt_extend: bool | None = None
    watermark: bool = False
    seed: Seed | None = None

    @field_validator("resolution")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        if value is not None and value.strip().upper() not in TIERS:
            raise ValueError("resolution must be 720P or 1080P")
        return value.strip().upper() if value is not None else None

    @field_validator("size")
    @classmethod
    def _pixels(cls, value: str | None) -> str | None:
        if value is None:
            return None
        pixels = parse_pixel_size(value.replace("*", "x"))
        if pixels is None:
            raise ValueError("size must be WIDTH*HEIGHT, such as 1280*720")
        return checked_pixel_size(pixels, "*")


class SynthesisBody(BaseModel):
    """`POST /api/v1/services/aigc/{video-generation|image2video}/video-synthesis`."""

    model_config = ConfigDict(extra="ignore")

    model: ModelName
    input: SynthesisInput
    parameters: SynthesisParameters = Field(default_factory=SynthesisParameters)

    def to_create_request(self) -> CreateRequest:
        """The request in the terms both API families share."""
        given, params = self.input, self.parameters
        prompt_extend = params.prompt_extend
        if prompt_extend is None:
            prompt_extend = given.extend_prompt if given.extend_prompt is not None else True
        return CreateRequest(
            model=self.model,
            media=given.media_sources(),
            prompt=given.prompt or "",
            negative_prompt=given.negative_prompt or "",
            # An exact pixel size is the more specific ask, so it wins over a tier.
            size=params.size or params.resolution or "1080P",
            seconds=params.duration,
            prompt_extend=prompt_extend,
            watermark=params.watermark,
            seed=params.seed,
            seconds_include_clip=True,
        )


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def synthesis_body_schema() -> dict[str, Any]:
    """The JSON schema of `SynthesisBody` with no `$ref`s, for a hand-written OpenAPI body."""
    schema = SynthesisBody.model_json_schema()
    return dict(_inline(schema, schema.get("$defs", {})))


class CreatedOutput(BaseModel):
    """`output` of a create answer."""

    task_id: str
    task_status: TaskStatus


class CreatedTask(BaseModel):
    """Answer of a video-synthesis create."""

    request_id: str
    output: CreatedOutput


class TaskOutput(BaseModel):
    """`output` of a task: its state, times, and on success the video and prompts."""

    task_id: str
    task_status: TaskStatus
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    video_url: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None
    code: str | None = None
    message: str | None = None


class TaskUsage(BaseModel):
    """What a finished task produced, in the fields the SDKs read."""

    model_config = ConfigDict(populate_by_name=True)

    duration: int
    video_duration: int
    output_video_duration: int
    video_count: int = 1
    video_ratio: str
    sr: int = Field(serialization_alias="SR", validation_alias="SR")


class TaskAnswer(BaseModel):
    """Answer of `GET /api/v1/tasks/{task_id}` and of a cancel."""

    request_id: str
    output: TaskOutput
    usage: TaskUsage | None = None


class TaskSummary(TaskOutput):
    """One entry of a task list."""

    model_name: str
    status: TaskStatus


class TaskList(BaseModel):
    """Answer of `GET /api/v1/tasks`.

    DashScope documents the page as `data`; the 2.x SDK's `JobList` reads `tasks`.
    Both carry the same entries so either client reads the page.
    """

    request_id: str
    data: list[TaskSummary]
    tasks: list[TaskSummary]
    total: int
    total_page: int
    page_no: int
    page_size: int


class DashScopeError(BaseModel):
    """Every error body on the `/api/v1` routes."""

    request_id: str
    code: str
    message: str
