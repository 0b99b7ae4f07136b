"""Engine `dashscope`: forward each job to Alibaba Cloud DashScope (Model Studio).

Protocol (the `dashscope` SDK's video synthesis, media input for wan2.7-i2v):
`POST {base}/services/aigc/video-generation/video-synthesis` with `X-DashScope-Async:
enable` answers a task id, saved at once through `EngineContext.save_state` so that a
restarted worker polls that task instead of paying for a new one; `GET {base}/tasks/{id}`
is polled (PENDING, RUNNING, then SUCCEEDED, FAILED, CANCELED or UNKNOWN) and on success
`output.video_url`, a signed URL valid for a limited time, is downloaded at once. A cancel
is forwarded with `POST {base}/tasks/{id}/cancel` (the provider honours it while PENDING).

Media: the client's own public http(s) URL is passed through. Inputs that only exist
here (uploads, `data:` URLs) go through the provider's temporary file storage: an upload
policy from `GET {base}/uploads?action=getPolicy&model=…`, a form POST to its OSS host,
then an `oss://` URL in the request with `X-DashScope-OssResourceResolve: enable`.

Progress: DashScope reports none, so it is estimated from the time since submission
against a moving average of this engine's past task durations (see
`wanserve.engines.upstream`); it never goes down and stays below 0.95 until the video is
here.

Settings (options first, then `WANSERVE_DASHSCOPE_*`): `api_key` (required), `base_url`
(default the international endpoint; `https://dashscope.aliyuncs.com/api/v1` for the
mainland), `upstream_model` (default `wan2.7-i2v`), and the polling knobs of
`UpstreamSettings`.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic_settings import SettingsConfigDict

from wanserve.engines.base import EngineContext, GenerationRequest, MediaInput, VideoFile
from wanserve.engines.upstream import (
    NOT_SENT,
    RESULT_GONE,
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

INTERNATIONAL_URL = "https://dashscope-intl.aliyuncs.com/api/v1"
MAINLAND_URL = "https://dashscope.aliyuncs.com/api/v1"
SYNTHESIS_PATH = "/services/aigc/video-generation/video-synthesis"
_STATES: dict[str, TaskState] = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "cancelled",
    "UNKNOWN": "unknown",
}
_RESOLUTIONS = ("720P", "1080P")


class DashScopeSettings(UpstreamSettings):
    """Settings of the `dashscope` engine (env prefix `WANSERVE_DASHSCOPE_`)."""

    model_config = SettingsConfigDict(env_prefix="WANSERVE_DASHSCOPE_", extra="ignore")

    base_url: str = INTERNATIONAL_URL


class DashScopeEngine(ProviderEngine):
    """Runs jobs as DashScope video-synthesis tasks."""

    name = "dashscope"

    def __init__(self, config: DashScopeSettings, *, transport: httpx.BaseTransport | None = None):
        if config.api_key is None:
            raise EngineError("the dashscope engine needs WANSERVE_DASHSCOPE_API_KEY")
        super().__init__(config, transport=transport)
        self.base_url = config.base_url.rstrip("/")
        self._key = config.api_key.get_secret_value()

    def submit(self, request: GenerationRequest, context: EngineContext) -> str:
        """Upload local-only media, then create the video-synthesis task."""
        media, uploaded = self._media(request, context)
        headers = self._auth() | {"X-DashScope-Async": "enable"}
        if uploaded:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        response = self.client.request(
            "POST",
            self.base_url + SYNTHESIS_PATH,
            json=synthesis_body(request, self.config.upstream_model, media),
            headers=headers,
            context=context,
            resend_on=NOT_SENT,
        )
        output = self._answer(response).get("output") or {}
        if not output.get("task_id"):
            raise EngineError(
                "dashscope accepted the task without a task id", code="upstream_error"
            )
        return str(output["task_id"])

    def fetch(self, task_id: str, context: EngineContext) -> TaskSnapshot:
        """Read the task once."""
        response = self.client.request(
            "GET", f"{self.base_url}/tasks/{task_id}", headers=self._auth(), context=context
        )
        body = self._answer(response)
        status = str((body.get("output") or {}).get("task_status", "UNKNOWN"))
        return TaskSnapshot(_STATES.get(status, "unknown"), body)

    def cancel(self, task_id: str) -> None:
        """Forward a cancel; DashScope only honours it while the task is PENDING."""
        self.client.best_effort(
            "POST", f"{self.base_url}/tasks/{task_id}/cancel", headers=self._auth()
        )

    def collect(
        self, request: GenerationRequest, context: EngineContext, task_id: str, final: TaskSnapshot
    ) -> VideoFile:
        """Download a SUCCEEDED task's video; raise a FAILED task's code and message."""
        output = final.body.get("output") or {}
        if final.state == "failed":
            raise UpstreamError(
                f"dashscope: {output.get('message') or 'the task failed'}",
                provider_code=output.get("code"),
            )
        path = context.work_dir / "upstream.mp4"
        try:
            self._download(output, path, context)
        except UpstreamError as exc:
            if exc.provider_code != RESULT_GONE:
                raise
            # The signed URL may have expired (a resumed job): read the task again, once.
            output = self.fetch(task_id, context).body.get("output") or {}
            self._download(output, path, context)
        check_mp4(path, self.name)
        return VideoFile(path, metadata=result_metadata(task_id, final.body, output, self.config))

    def _download(self, output: Mapping[str, Any], path: Any, context: EngineContext) -> None:
        if not output.get("video_url"):
            raise EngineError(
                "dashscope finished the task without a video_url", code="upstream_error"
            )
        # No Authorization header: the result lives on another host (OSS).
        self.client.download(str(output["video_url"]), path, context=context)

    def _media(
        self, request: GenerationRequest, context: EngineContext
    ) -> tuple[list[dict[str, str]], bool]:
        # A continuation sends the clip itself: DashScope continues it (first_clip).
        start = ("first_clip", request.first_clip) if request.first_clip else None
        inputs = [start or ("first_frame", request.first_frame)]
        for kind, given in (
            ("last_frame", request.last_frame),
            ("driving_audio", request.driving_audio),
        ):
            if given is not None:
                inputs.append((kind, given))
        policy: dict[str, Any] | None = None
        media = []
        for kind, item in inputs:
            if item.source_url:
                media.append({"type": kind, "url": item.source_url})
                continue
            policy = policy or self._upload_policy(context)
            media.append({"type": kind, "url": self._upload(kind, item, policy, context)})
        return media, policy is not None

    def _upload_policy(self, context: EngineContext) -> dict[str, Any]:
        response = self.client.request(
            "GET",
            f"{self.base_url}/uploads",
            params={"action": "getPolicy", "model": self.config.upstream_model},
            headers=self._auth(),
            context=context,
        )
        body = self._answer(response)
        policy = body.get("data") or body.get("output")
        if not isinstance(policy, dict) or "upload_host" not in policy:
            raise EngineError("dashscope gave no upload policy", code="upstream_error")
        return policy

    def _upload(
        self, kind: str, item: MediaInput, policy: Mapping[str, Any], context: EngineContext
    ) -> str:
        suffix = mimetypes.guess_extension(item.content_type) or ""
        key = f"{policy['upload_dir']}/{kind}{suffix}"
        form = {
            "OSSAccessKeyId": policy["oss_access_key_id"],
            "Signature": policy["signature"],
            "policy": policy["policy"],
            "key": key,
            "x-oss-object-acl": policy["x_oss_object_acl"],
            "x-oss-forbid-overwrite": policy["x_oss_forbid_overwrite"],
            "success_action_status": "200",
            "x-oss-content-type": item.content_type,
        }
        # Bytes, not a file handle, so that a retry sends the whole file again.
        files = {"file": (f"{kind}{suffix}", item.path.read_bytes(), item.content_type)}
        response = self.client.request(
            "POST", str(policy["upload_host"]), data=form, files=files, context=context
        )
        if not response.is_success:
            raise EngineError(
                f"dashscope temporary storage refused the {kind} (HTTP {response.status_code})",
                code="upstream_error",
            )
        return f"oss://{key}"

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"}

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        body = provider_json(response, self.name)
        if not response.is_success:
            raise UpstreamError(
                f"dashscope: {body.get('message') or f'HTTP {response.status_code}'}",
                provider_code=body.get("code"),
            )
        return body


def synthesis_body(
    request: GenerationRequest, model: str, media: list[dict[str, str]]
) -> dict[str, Any]:
    """The video-synthesis request body for `request` (wan2.7-i2v's media protocol)."""
    task_input: dict[str, Any] = {"prompt": request.prompt, "media": media}
    if request.negative_prompt:
        task_input["negative_prompt"] = request.negative_prompt
    return {
        "model": model,
        "input": task_input,
        "parameters": {
            "resolution": resolution(request),
            "duration": duration(request),
            "prompt_extend": request.prompt_extend,
            "watermark": request.watermark,
            "seed": request.seed,
        },
    }


def duration(request: GenerationRequest) -> int:
    """DashScope's `duration`: of the whole output, so a continuation's counts the clip."""
    if request.first_clip is None or request.first_clip.duration is None:
        return request.seconds
    return round(request.first_clip.duration + request.seconds)


def resolution(request: GenerationRequest) -> str:
    """DashScope's resolution tier: the client's label, or the tier a WxH size fits in."""
    label = request.size_label.upper()
    if label in _RESOLUTIONS:
        return label
    return "720P" if request.width * request.height <= 1280 * 720 else "1080P"


def result_metadata(
    task_id: str, body: Mapping[str, Any], output: Mapping[str, Any], config: UpstreamSettings
) -> dict[str, Any]:
    """What the job records about the provider's run (no URLs: they are signed)."""
    return {
        "provider": "dashscope",
        "task_id": task_id,
        "upstream_model": config.upstream_model,
        "orig_prompt": output.get("orig_prompt"),
        "actual_prompt": output.get("actual_prompt"),
        "submit_time": output.get("submit_time"),
        "end_time": output.get("end_time"),
        "usage": body.get("usage"),
        "request_id": body.get("request_id"),
    }


def create_engine(settings: Settings, options: Mapping[str, Any]) -> DashScopeEngine:
    """The `dashscope` engine, configured from `options` first, then the environment."""
    return DashScopeEngine(DashScopeSettings(**dict(options)))
