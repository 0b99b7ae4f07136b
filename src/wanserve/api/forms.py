"""Reading a create request from JSON or from the openai SDK's multipart form."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from wanserve.api.fields import MEDIA_TYPES
from wanserve.api.schemas import CreateVideoBody, ExtendVideoBody
from wanserve.errors import InvalidRequest
from wanserve.jobs.intake import CreateRequest, MediaSource
from wanserve.jobs.model import Job
from wanserve.settings import DEFAULT_MODEL

# `media[][type]` (the openai SDK's "brackets" arrays) or `media[0][type]`.
_MEDIA_FIELD = re.compile(r"^media\[(\d*)\]\[(type|url)\]$")
# File parts that upload a media input directly; `input_reference` is OpenAI's first frame.
FILE_PARTS: dict[str, str] = {"input_reference": "first_frame", **{t: t for t in MEDIA_TYPES}}
# videos.extend uploads the clip to continue as `video`.
EXTEND_FILE_PARTS = {"video": "first_clip"}
MAX_JSON_DEPTH = 32


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or a 400 saying what is wrong with it."""
    # ValueError also covers integers longer than Python's 4300-digit conversion limit.
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if _depth(body) > MAX_JSON_DEPTH:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json")
    return body


def _media_from_form(fields: list[tuple[str, str]]) -> list[dict[str, str]] | None:
    # The openai SDK groups repeated keys, sending every media[][type] before every
    # media[][url]: the i-th type pairs with the i-th url.
    appended: dict[str, list[str]] = {"type": [], "url": []}
    indexed: dict[int, dict[str, str]] = {}
    for name, value in fields:
        match = _MEDIA_FIELD.match(name)
        if not match:
            continue
        index, key = match.groups()
        if index:
            indexed.setdefault(int(index), {})[key] = value
        else:
            appended[key].append(value)
    count = max(len(appended["type"]), len(appended["url"]))
    if not count and not indexed:
        return None
    paired = [
        {key: values[i] for key, values in appended.items() if i < len(values)}
        for i in range(count)
    ]
    return paired + [indexed[i] for i in sorted(indexed)]


async def read_form(
    request: Request, max_part_size: int, parts: dict[str, str] = FILE_PARTS
) -> tuple[dict[str, Any], list[MediaSource]]:
    """Scalar fields and uploaded media of a multipart (or url-encoded) create request;
    `parts` maps the file parts taken to the media type each uploads."""
    try:
        form = await request.form(max_files=8, max_fields=64, max_part_size=max_part_size)
    except Exception as exc:  # python-multipart raises several unrelated types
        raise InvalidRequest(
            f"The multipart body could not be parsed: {exc}", code="invalid_multipart"
        ) from exc
    fields: list[tuple[str, str]] = []
    uploads: list[MediaSource] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            media_type = parts.get(name)
            if media_type is None:
                raise InvalidRequest(f"Unexpected file part '{name}'.", param=name)
            uploads.append(MediaSource(type=media_type, param=name, data=await value.read()))
        else:
            fields.append((name, value))
    nested = ("media[", "video[", "input_reference[")
    body: dict[str, Any] = {n: v for n, v in fields if n != "media" and not n.startswith(nested)}
    named = dict(fields)
    if "video[id]" in named:  # videos.extend's `{"id"}` in the form's bracket notation
        body["video"] = {"id": named["video[id]"]}
    if "input_reference[image_url]" in named:
        body["input_reference"] = {"image_url": named["input_reference[image_url]"]}
    media = _media_from_form(fields)
    if "media" in named:
        # One JSON-encoded field: what a LiteLLM proxy sends, as it drops repeated parts.
        media = _media_from_json(named["media"]) + (media or [])
    if media is not None:
        body["media"] = media
    elif uploads:
        body["media"] = []
    return body, uploads


def _media_from_json(text: str) -> list[Any]:
    try:
        media = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest("media is not valid JSON.", param="media") from exc
    if not isinstance(media, list):
        raise InvalidRequest("media must be a JSON array of {type, url}.", param="media")
    if _depth(media) > MAX_JSON_DEPTH:
        raise InvalidRequest("media is nested too deeply.", param="media")
    return media


def create_request_from(body: dict[str, Any], uploads: list[MediaSource]) -> CreateRequest:
    """Validate a parsed body (pydantic errors become 400s naming the field)."""
    model = CreateVideoBody.model_validate(body)
    sources = [
        MediaSource(type=item.type, param=f"media[{i}].url", url=item.url)
        for i, item in enumerate(model.media)
    ]
    reference = model.input_reference
    if reference is not None:
        if reference.image_url is None:
            raise InvalidRequest(
                "input_reference needs an image_url (file_id references are not supported).",
                param="input_reference.image_url",
            )
        sources.append(
            MediaSource(
                type="first_frame", param="input_reference.image_url", url=reference.image_url
            )
        )
    return CreateRequest(
        model=model.model,
        media=sources + uploads,
        prompt=model.prompt or "",
        negative_prompt=model.negative_prompt or "",
        size=model.size,
        seconds=model.seconds,
        prompt_extend=model.prompt_extend,
        watermark=model.watermark,
        seed=model.seed,
        webhook_url=model.webhook_url,
    )


def extend_request_from(
    extend: ExtendVideoBody, uploads: list[MediaSource], source: Job | None, clip: bytes | None
) -> CreateRequest:
    """The create request of a `videos.extend`: the uploaded clip, or the finished video of
    `source` (`clip`, its bytes), continued by `seconds`."""
    if source is not None and clip is not None:
        media = [MediaSource(type="first_clip", param="video", data=clip)]
        model, size = extend.model or source.model, extend.size or source.spec.size
    else:
        media, model, size = uploads, extend.model or DEFAULT_MODEL, extend.size or "720P"
    return CreateRequest(
        model=model,
        media=media,
        prompt=extend.prompt or "",
        negative_prompt=extend.negative_prompt or "",
        size=size,
        seconds=extend.seconds,
        prompt_extend=extend.prompt_extend,
        watermark=extend.watermark,
        seed=extend.seed,
        extends=source.id if source is not None else None,
    )
