"""The job record, its states and the one table of legal transitions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wanserve.errors import Conflict


def owner_of(key: str) -> str:
    """A stable, non-reversible owner id for an API key (keys are never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class JobStatus(StrEnum):
    """Internal job states; `cancelled` reads as `failed` + code `cancelled` on the wire."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_finished(self) -> bool:
        """Terminal states never change again."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.IN_PROGRESS, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.IN_PROGRESS: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.QUEUED,  # lease expired: the worker died, try again
            JobStatus.UNKNOWN,
        }
    ),
    # Only an upstream provider puts a job in `unknown`; it may still resolve either way.
    JobStatus.UNKNOWN: frozenset(
        {JobStatus.IN_PROGRESS, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class IllegalTransition(Conflict):
    """A state change the transition table does not allow."""

    code = "invalid_state"


def check_transition(current: JobStatus, target: JobStatus) -> None:
    """Raise `IllegalTransition` unless `current -> target` is in the table."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"a {current.value} job cannot become {target.value}")


class ErrorCode(StrEnum):
    """The fixed list of codes a failed job may carry."""

    CANCELLED = "cancelled"
    ENGINE_ERROR = "engine_error"
    UPSTREAM_ERROR = "upstream_error"
    WORKER_LOST = "worker_lost"
    TIMEOUT = "timeout"
    STORAGE_ERROR = "storage_error"


@dataclass(frozen=True)
class MediaRef:
    """A stored media input of a job."""

    type: str  # first_frame | last_frame | driving_audio
    key: str  # storage key
    content_type: str
    source_url: str | None = None  # the client's http(s) URL, when it gave one
    width: int | None = None
    height: int | None = None
    duration: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the store."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaRef:
        """Inverse of `to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class JobSpec:
    """The validated generation settings of a job (what the client asked for)."""

    prompt: str
    negative_prompt: str
    size: str  # as given: "720P", "1080P" or "WxH"
    width: int
    height: int
    seconds: int
    seed: int
    prompt_extend: bool = True
    watermark: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the store."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Inverse of `to_dict`."""
        return cls(**data)


@dataclass
class Job:
    """One job as the store holds it; the API builds its wire objects from this."""

    id: str
    owner: str
    model: str
    engine: str
    status: JobStatus
    spec: JobSpec
    media: list[MediaRef]
    progress: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # keys of stored outputs, fps, size
    metadata: dict[str, Any] = field(default_factory=dict)  # engine's account of what it did
    engine_state: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    remixed_from: str | None = None
    source_api: str = "openai"  # which API family created it
    # The served model whose workers run it: `model` unless it overflowed to another one.
    route: str = ""
    # Webhook targets recorded at create: [{"url", "secret": "global"|"key", "checked"}].
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0  # counts status and progress changes (the event stream's ids)

    def __post_init__(self) -> None:
        if not self.route:
            self.route = self.model

    def media_of(self, media_type: str) -> MediaRef | None:
        """The stored media of one type, if the job has it."""
        return next((m for m in self.media if m.type == media_type), None)
