"""Domain exceptions shared by every layer.

None of these know HTTP: `wanserve.api.errors` maps each class to a status code and an
error body in exactly one place. Each carries a stable machine-readable `code` and, for
input errors, the `param` that was wrong.
"""

from __future__ import annotations


class WanserveError(Exception):
    """Base class: a message safe to show to clients, a stable code."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(WanserveError):
    """The client sent something we refuse to act on (HTTP 400)."""

    code = "invalid_request"


class MediaError(InvalidRequest):
    """A media input could not be fetched, or is not an acceptable image/audio."""

    code = "invalid_media"


class MediaForbidden(MediaError):
    """A media URL points somewhere we must never connect to (SSRF defence)."""

    code = "media_url_forbidden"


class ModelNotFound(InvalidRequest):
    """The requested model name is not served here."""

    code = "model_not_found"


class NotFound(WanserveError):
    """No such resource for this caller (also used for other keys' jobs)."""

    code = "not_found"


class Conflict(InvalidRequest):
    """The request is valid but the job is in the wrong state for it (HTTP 400)."""

    code = "invalid_state"


class Unauthorized(WanserveError):
    """Missing or wrong API key."""

    code = "invalid_api_key"


class PayloadTooLarge(WanserveError):
    """Request body over the configured limit."""

    code = "payload_too_large"


class RequestTimeout(WanserveError):
    """The request body did not arrive within the configured time."""

    code = "request_timeout"


class RangeNotSatisfiable(WanserveError):
    """A byte range request none of whose ranges overlaps the file of `size` bytes."""

    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int):
        super().__init__(message, param="Range")
        self.size = size


class RateLimited(WanserveError):
    """Too many requests or too many unfinished jobs for one key."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TooManyUnfinished(RateLimited):
    """The key already has as many queued or running jobs as it may."""

    def __init__(self, limit: int):
        super().__init__(
            f"This API key already has {limit} queued or running videos; "
            "wait for some to finish or cancel them.",
            code="too_many_unfinished_jobs",
        )


class Unavailable(WanserveError):
    """The server cannot take the request right now (its storage is full, its database down).

    Expected and passing: clients are told when to try again (`retry_after` seconds).
    """

    code = "service_unavailable"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float = 2.0,
        reason: str = "unavailable",
    ):
        super().__init__(message, code=code)
        self.retry_after = retry_after
        self.reason = reason  # a short word for operators (readiness): "unreachable", "disk full"


class StoreUnavailable(Unavailable):
    """The job database cannot be reached or cannot write just now (down, restarting, full).

    Raised by the store for every such failure, so callers tell a store outage from their
    own failures: the API answers 503, a worker waits and retries.
    """


class StorageUnavailable(Unavailable):
    """The file storage (a bucket) cannot be reached just now; a full local disk is ENOSPC."""


class JobCancelled(Exception):
    """Raised inside a running job when it was cancelled or deleted; stops the work."""


class EngineError(Exception):
    """An engine could not produce the video; `code` is one of the job error codes."""

    def __init__(self, message: str, *, code: str = "engine_error"):
        super().__init__(message)
        self.message = message
        self.code = code


class UpstreamError(EngineError):
    """A remote provider failed the task; keeps the provider's own code."""

    def __init__(self, message: str, *, provider_code: str | None = None):
        super().__init__(message, code="upstream_error")
        self.provider_code = provider_code
