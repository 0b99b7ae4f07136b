"""Engine `openai-upstream`: forward each job to an OpenAI-compatible `/v1/videos` provider.

`POST {base}/videos` (JSON: model, prompt, size, seconds and the `media` list of
first/last frame and driving audio) answers a video id, saved at once through
`EngineContext.save_state` so that a restarted worker polls that video instead of paying
for a new one; `GET {base}/videos/{id}` is polled (`queued`, `in_progress`, then
`completed` or `failed`) and `GET {base}/videos/{id}/content` downloads the MP4. A cancel
is forwarded with `POST {base}/videos/{id}/cancel`, best effort (not every provider has
it). Media the client gave as a public http(s) URL are passed through; the others are
sent inline as `data:` URLs.

Progress: the provider's `progress` (0..100) when it reports one, else the elapsed-time
estimate of `wanserve.engines.upstream`; it never goes down.

Settings (options first, then `WANSERVE_OPENAI_UPSTREAM_*`): `base_url` (up to and
including `/v1`), `api_key`, `upstream_model` (default `wan2.7-i2v`), and the polling
knobs of `UpstreamSettings`.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic_settings import SettingsConfigDict

from wanserve.engines.base import EngineContext, GenerationRequest, MediaInput, VideoFile
from wanserve.engines.upstream import (
    NOT_SENT,
    ProviderEngine,
    TaskSnapshot,
    TaskState,
    UpstreamSettings,
    check_mp4,
    provider_json,
)
from wanserve.errors import EngineError, UpstreamError
from wanserve.settings import Settings

logger = logging.getLogger(__name__)

_STATES: dict[str, TaskState] = {
    "queued": "pending",
    "in_progress": "running",
    "completed": "succeeded",
    "failed": "failed",
    "unknown": "unknown",
}


class OpenAIUpstreamSettings(UpstreamSettings):
    """Settings of the `openai-upstream` engine (env prefix `WANSERVE_OPENAI_UPSTREAM_`)."""

    model_config = SettingsConfigDict(env_prefix="WANSERVE_OPENAI_UPSTREAM_", extra="ignore")

    base_url: str = "https://api.openai.com/v1"


class OpenAIUpstreamEngine(ProviderEngine):
    """Runs jobs as videos on an OpenAI-compatible provider."""

    name = "openai-upstream"

    def __init__(
        self, config: OpenAIUpstreamSettings, *, transport: httpx.BaseTransport | None = None
    ):
        super().__init__(config, transport=transport)
        self.base_url = config.base_url.rstrip("/")
        self._headers = {}
        if config.api_key is not None:
            self._headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"

    def submit(self, request: GenerationRequest, context: EngineContext) -> str:
        """Create the video (or, for a continuation, extend the clip); return its id."""
        if request.first_clip is not None:
            response = self._extend(request, request.first_clip, context)
        else:
            response = self.client.request(
                "POST",
                f"{self.base_url}/videos",
                json=video_body(request, self.config.upstream_model),
                headers=self._headers,
                context=context,
                resend_on=NOT_SENT,
            )
        body = self._answer(response)
        if not body.get("id"):
            raise EngineError(
                "the provider accepted the video without an id", code="upstream_error"
            )
        return str(body["id"])

    def _extend(
        self, request: GenerationRequest, clip: MediaInput, context: EngineContext
    ) -> httpx.Response:
        # The openai SDK's videos.extend: the clip uploaded, the new part's seconds.
        form = {"prompt": request.prompt, "seconds": str(request.seconds)}
        if request.last_frame is not None or request.driving_audio is not None:
            raise UpstreamError(
                f"{self.name}: videos.extend takes no last_frame or driving_audio",
                provider_code="unsupported_media",
            )
        suffix = clip.path.suffix or ".mp4"
        files = {"video": (f"clip{suffix}", clip.path.read_bytes(), clip.content_type)}
        response = self.client.request(
            "POST",
            f"{self.base_url}/videos/extensions",
            data=form,
            files=files,
            headers=self._headers,
            context=context,
            resend_on=NOT_SENT,
        )
        if response.status_code in (404, 405):
            raise UpstreamError(
                f"{self.name}: the provider has no videos.extend (POST /videos/extensions), "
                "so it cannot continue a clip",
                provider_code="extend_unsupported",
            )
        return response

    def fetch(self, task_id: str, context: EngineContext) -> TaskSnapshot:
        """Read the video object once."""
        response = self.client.request(
            "GET", f"{self.base_url}/videos/{task_id}", headers=self._headers, context=context
        )
        body = self._answer(response)
        state = _STATES.get(str(body.get("status")), "unknown")
        error = body.get("error") or {}
        if state == "failed" and isinstance(error, dict) and error.get("code") == "cancelled":
            state = "cancelled"  # a cancelled video reads as failed + code cancelled
        return TaskSnapshot(state, body, _progress(body.get("progress")))

    def cancel(self, task_id: str) -> None:
        """Forward a cancel, best effort."""
        self.client.best_effort(
            "POST", f"{self.base_url}/videos/{task_id}/cancel", headers=self._headers
        )

    def collect(
        self, request: GenerationRequest, context: EngineContext, task_id: str, final: TaskSnapshot
    ) -> VideoFile:
        """Download a completed video; raise a failed one's code and message."""
        if final.state == "failed":
            error = final.body.get("error")
            error = error if isinstance(error, dict) else {}
            raise UpstreamError(
                f"{self.name}: {error.get('message') or 'the video failed'}",
                provider_code=error.get("code"),
            )
        path = context.work_dir / "upstream.mp4"
        self.client.download(
            f"{self.base_url}/videos/{task_id}/content",
            path,
            headers=self._headers,
            context=context,
        )
        check_mp4(path, self.name)
        body = final.body
        metadata = {
            "provider": self.name,
            "task_id": task_id,
            "upstream_model": body.get("model") or self.config.upstream_model,
            "seconds": body.get("seconds"),
            "size": body.get("size"),
            "seed": body.get("seed"),
        }
        return VideoFile(path, metadata=metadata)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        body = provider_json(response, self.name)
        if not response.is_success:
            error = body.get("error")
            error = error if isinstance(error, dict) else {}
            raise UpstreamError(
                f"{self.name}: {error.get('message') or f'HTTP {response.status_code}'}",
                provider_code=error.get("code"),
            )
        return body


def video_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The JSON body of `POST /videos` for `request`."""
    media = [{"type": "first_frame", "url": media_url(request.first_frame)}]
    for kind, given in (
        ("last_frame", request.last_frame),
        ("driving_audio", request.driving_audio),
    ):
        if given is not None:
            media.append({"type": kind, "url": media_url(given)})
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt,
        "size": request.size_label,
        "seconds": str(request.seconds),
        "seed": request.seed,
        "prompt_extend": request.prompt_extend,
        "watermark": request.watermark,
        "media": media,
    }
    if request.negative_prompt:
        body["negative_prompt"] = request.negative_prompt
    return body


def media_url(item: MediaInput) -> str:
    """The client's public URL, or the local file inlined as a `data:` URL."""
    if item.source_url:
        return item.source_url
    encoded = base64.b64encode(item.path.read_bytes()).decode("ascii")
    return f"data:{item.content_type};base64,{encoded}"


def _progress(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(max(float(value) / 100.0, 0.0), 1.0)
    return None


def create_engine(settings: Settings, options: Mapping[str, Any]) -> OpenAIUpstreamEngine:
    """The `openai-upstream` engine, configured from `options` first, then the environment."""
    return OpenAIUpstreamEngine(OpenAIUpstreamSettings(**dict(options)))
