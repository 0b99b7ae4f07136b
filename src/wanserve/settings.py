"""Configuration: every setting is an environment variable prefixed `WANSERVE_`."""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "wan2.7-i2v"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from `90`, `"90"`, `"15m"`, `"24h"` or `"7d"`."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 3600, 30m, 24h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _split_list(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def check_webhook_secret(value: SecretStr | None) -> SecretStr | None:
    """A Standard Webhooks secret: `whsec_` and base64 (what the openai SDK decodes)."""
    if value is None:
        return None
    raw = value.get_secret_value()
    try:
        ok = raw.startswith("whsec_") and bool(base64.b64decode(raw[6:], validate=True))
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise ValueError("a webhook secret is whsec_ followed by base64 (e.g. whsec_ + 32 bytes)")
    return value


class WebhookTarget(BaseModel):
    """One API key's own webhook endpoint (`WANSERVE_WEBHOOKS`)."""

    url: str | None = None
    secret: SecretStr | None = None

    _secret_format = field_validator("secret")(check_webhook_secret)


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


class Settings(BaseSettings):
    """All of wanserve's settings; `Settings()` reads them from the environment."""

    model_config = SettingsConfigDict(env_prefix="WANSERVE_", extra="ignore")

    data_dir: Path = Path("wanserve-data")
    database_url: str | None = None
    storage_url: str | None = None
    # For `s3://` storage; unset values fall back to boto3's chain (AWS_* variables, ~/.aws,
    # instance roles). The public endpoint signs URLs for clients when ours is internal.
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    broker_url: str | None = None
    public_url: str | None = Field(
        default=None, description="Base URL clients reach us at; default: taken from each request"
    )

    api_keys: Annotated[list[str], NoDecode] = []
    metrics_key: str | None = None
    # The operator's key: `GET /v1/workers` (and every key's usage).
    admin_key: SecretStr | None = None
    url_signing_key: str | None = None

    engine: str = "keyframe"
    models: dict[str, Any] = {}
    # The models this machine's workers serve (`wanserve worker --models`); empty: all.
    worker_models: Annotated[list[str], NoDecode] = []

    workers: int = Field(default=1, ge=0)
    # Worker processes run this much nicer than the API (os.nice): a render then takes the
    # CPU the API leaves idle, and polls stay quick while it runs (0: same priority).
    worker_nice: int = Field(default=10, ge=0, le=19)
    # API processes `serve` runs on its one port (uvicorn's workers); they share the
    # store, and the job workers above are started once, beside them.
    api_workers: int = Field(default=1, ge=1)
    # One worker process per entry, pinned with CUDA_VISIBLE_DEVICES: "0,1,2,3" gives four
    # one-GPU workers, "0+1,2+3" two workers of two GPUs (for context parallelism).
    gpus: Annotated[list[str], NoDecode] = []
    # Models whose engines each worker loads at start: all, none, or comma-separated names.
    preload: Annotated[list[str], NoDecode] = ["all"]
    retention: float = 24 * 3600
    job_lease: float = 30.0
    max_attempts: int = Field(default=3, ge=1)
    poll_interval: float = 0.5
    poll_after_ms: int = 2000

    media_allowed_hosts: Annotated[list[str], NoDecode] = []
    max_image_bytes: int = 20 * 1024 * 1024
    max_audio_bytes: int = 15 * 1024 * 1024
    max_clip_bytes: int = 50 * 1024 * 1024  # a `first_clip` video
    fetch_connect_timeout: float = 5.0
    fetch_timeout: float = 30.0
    max_json_body: int = 64 * 1024 * 1024  # data: URLs of 20 MB images fit
    max_multipart_body: int = 64 * 1024 * 1024
    # A whole body must arrive within this (a client trickling it cannot hold the
    # server), and on SIGTERM running requests, then worker processes, get this long.
    body_read_timeout: float = Field(default=60.0, gt=0)
    shutdown_timeout: float = Field(default=10.0, ge=0)
    # Per API key: creates per second (token bucket of `create_burst`) and queued or
    # running jobs at once; 0 turns a limit off.
    create_rate: float = Field(default=2.0, ge=0)
    create_burst: int = Field(default=20, ge=0)
    max_unfinished_jobs: int = Field(default=100, ge=0)

    encoder_preset: str = "veryfast"

    # Webhooks: every job's events to `webhook_url`, signed with `webhook_secret`; per API
    # key (or owner id) its own endpoint and secret; retried for `webhook_retry_for`.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhooks: dict[str, WebhookTarget] = {}
    webhook_retry_for: float = 24 * 3600
    webhook_first_retry: float = Field(default=5.0, gt=0)
    webhook_timeout: float = Field(default=10.0, gt=0)

    # Live progress (`GET /v1/videos/{id}/events`): open streams per key in one API
    # process, and seconds between heartbeat comments.
    max_streams_per_key: int = Field(default=8, ge=1)
    stream_heartbeat: float = Field(default=15.0, gt=0)

    _webhook_secret_format = field_validator("webhook_secret")(check_webhook_secret)

    @field_validator("api_keys", "media_allowed_hosts", "preload", "worker_models", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_groups(cls, value: Any) -> Any:
        groups = _split_list(value)
        for group in groups if isinstance(groups, list) else []:
            if not re.fullmatch(r"\d+(\+\d+)*", str(group)):
                raise ValueError(f"not a GPU index or group: {group!r} (use e.g. 0,1 or 0+1,2+3)")
        return groups

    @model_validator(mode="after")
    def _one_worker_per_gpu_group(self) -> Settings:
        if self.gpus and "workers" not in self.model_fields_set:
            self.workers = len(self.gpus)
        if self.gpus and self.workers not in (0, len(self.gpus)):
            # Two workers on one GPU would make a job wait on a device another one holds.
            raise ValueError(f"{len(self.gpus)} GPU groups need {len(self.gpus)} workers")
        return self

    @field_validator(
        "retention",
        "job_lease",
        "body_read_timeout",
        "shutdown_timeout",
        "webhook_retry_for",
        "webhook_first_retry",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("models", "webhooks", mode="before")
    @classmethod
    def _json_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    def to_json(self) -> str:
        """Every setting as JSON for a child process, secrets included (not masked)."""
        return json.dumps(self.model_dump(), default=_reveal)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'wanserve.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        """The storage URL, defaulting to files under the data directory."""
        if self.storage_url:
            return self.storage_url
        return f"file://{(self.data_dir / 'files').resolve()}"
