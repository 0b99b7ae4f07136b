"""Shared plumbing for engines that forward jobs to a hosted video provider.

A provider engine submits one task, remembers its id through `EngineContext.save_state`
(so a restarted worker resumes the same task instead of paying for a second one), polls
it with exponential backoff and jitter, and downloads the finished MP4 into the job's
scratch folder. Everything that talks HTTP goes through `UpstreamClient`, which retries
throttling (429, honouring `Retry-After`), 5xx answers and connection errors a bounded
number of times. A submission (POST) is only re-sent when the first try provably never
reached the provider (connect errors), so a lost answer never turns into a second task.

Progress: when the provider reports none, `DurationEstimate` turns the time since
submission into a fraction, `0.95 * (1 - exp(-2 * elapsed / expected))`, where `expected`
is a moving average of this engine instance's past task durations (seeded with
`expected_seconds`). It rises fast at first, reaches ~0.82 at the expected duration and
never passes 0.95 until the video is downloaded; reported values never go down.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wanserve.engines.base import EngineContext, GenerationRequest, VideoFile
from wanserve.errors import EngineError, JobCancelled, UpstreamError
from wanserve.settings import parse_duration

logger = logging.getLogger(__name__)

T = TypeVar("T")
TaskState = Literal["pending", "running", "succeeded", "failed", "cancelled", "unknown"]
UNFINISHED: frozenset[str] = frozenset({"pending", "running", "unknown"})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Errors raised before a single byte reached the provider: re-sending a POST is then safe.
NOT_SENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
ANY_TRANSPORT: tuple[type[Exception], ...] = (httpx.TransportError,)
RESULT_GONE = "result_unavailable"  # provider_code when the result URL no longer works
PROGRESS_CAP = 0.95
_SLEEP_SLICE = 0.25  # how often a long wait looks for a cancel


class UpstreamSettings(BaseSettings):
    """Knobs every provider engine shares; subclasses set the env prefix and endpoint."""

    model_config = SettingsConfigDict(extra="ignore")

    api_key: SecretStr | None = None
    upstream_model: str = "wan2.7-i2v"
    poll_interval: float = Field(default=2.0, gt=0)
    max_poll_interval: float = Field(default=15.0, gt=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    request_timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    retry_backoff: float = Field(default=1.0, gt=0)
    max_retry_after: float = Field(default=120.0, gt=0)
    timeout: float = Field(default=3 * 3600.0, gt=0)
    unknown_timeout: float = Field(default=900.0, gt=0)
    max_download_bytes: int = Field(default=1024**3, gt=0)
    expected_seconds: float = Field(default=120.0, gt=0)

    @field_validator("timeout", "unknown_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


@dataclass(frozen=True)
class TaskSnapshot:
    """One look at a provider task, in the engine's own terms."""

    state: TaskState
    body: Mapping[str, Any] = field(default_factory=dict)
    progress: float | None = None  # the provider's own fraction in [0, 1], when it gives one


class DurationEstimate:
    """Moving average of how long this provider's tasks take; thread-safe."""

    def __init__(self, seed_seconds: float, weight: float = 0.3):
        self._expected = seed_seconds
        self._weight = weight
        self._lock = threading.Lock()

    @property
    def expected(self) -> float:
        """The current estimate of one task's duration in seconds."""
        return self._expected

    def record(self, seconds: float) -> None:
        """Fold one finished task's duration into the average."""
        if seconds <= 0:
            return
        with self._lock:
            self._expected += self._weight * (seconds - self._expected)

    def fraction(self, elapsed: float) -> float:
        """Estimated share of the task done after `elapsed` seconds, below `PROGRESS_CAP`."""
        return PROGRESS_CAP * (1.0 - math.exp(-2.0 * max(elapsed, 0.0) / self._expected))


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""

    def __init__(self, reason: str, delay: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asked us to wait (`Retry-After-Ms`, `Retry-After`), if any."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def pause(context: EngineContext | None, seconds: float) -> None:
    """Sleep `seconds`, looking for a cancel every quarter second."""
    deadline = time.monotonic() + seconds
    while True:
        if context is not None:
            context.raise_if_cancelled()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _SLEEP_SLICE))


def provider_json(response: httpx.Response, provider: str) -> dict[str, Any]:
    """The JSON object a provider answered, or `EngineError` if it is not one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise EngineError(
            f"{provider} answered HTTP {response.status_code} without a JSON object",
            code="upstream_error",
        )
    return body


class UpstreamClient:
    """One provider's HTTP session: bounded retries, backoff, size-capped downloads."""

    def __init__(
        self,
        config: UpstreamSettings,
        *,
        provider: str,
        transport: httpx.BaseTransport | None = None,
    ):
        self.config = config
        self.provider = provider
        timeout = httpx.Timeout(config.request_timeout, connect=config.connect_timeout)
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        context: EngineContext | None = None,
        resend_on: tuple[type[Exception], ...] = ANY_TRANSPORT,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; retry 429, 5xx and `resend_on` errors; return the final answer."""

        def attempt() -> httpx.Response:
            try:
                response = self._http.request(method, url, **kwargs)
            except resend_on as exc:
                raise _Transient(type(exc).__name__) from exc
            except httpx.TransportError as exc:
                # The request may have reached the provider: re-sending could start a
                # second (paid) task, so give up instead.
                logger.warning("%s: %s %s failed: %r", self.provider, method, _path(url), exc)
                raise EngineError(
                    f"{self.provider}: a request failed ({type(exc).__name__}) and was not "
                    "sent again",
                    code="upstream_error",
                ) from exc
            _raise_if_transient(response)
            return response

        return self._retrying(f"{self.provider}: {method} {_path(url)}", context, attempt)

    def best_effort(self, method: str, url: str, **kwargs: Any) -> bool:
        """Send one request once, never raising; True when the provider accepted it."""
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            logger.warning("%s: %s %s failed: %s", self.provider, method, _path(url), exc)
            return False
        if not response.is_success:
            logger.warning(
                "%s: %s answered HTTP %d", self.provider, _path(url), response.status_code
            )
        return response.is_success

    def download(
        self,
        url: str,
        dest: Path,
        *,
        headers: Mapping[str, str] | None = None,
        context: EngineContext | None = None,
    ) -> int:
        """Stream `url` into `dest` (temp name, then rename); returns the size in bytes."""
        partial = dest.with_name(dest.name + ".part")

        def attempt() -> int:
            try:
                with self._http.stream("GET", url, headers=headers, follow_redirects=True) as resp:
                    _raise_if_transient(resp)
                    if not resp.is_success:
                        raise UpstreamError(
                            f"{self.provider}: the result could not be downloaded "
                            f"(HTTP {resp.status_code})",
                            provider_code=RESULT_GONE,
                        )
                    size = self._write_capped(resp, partial)
            except httpx.TransportError as exc:
                raise _Transient(type(exc).__name__) from exc
            partial.replace(dest)
            return size

        try:
            return self._retrying(f"{self.provider}: GET {_path(url)}", context, attempt)
        finally:
            partial.unlink(missing_ok=True)

    def _write_capped(self, response: httpx.Response, partial: Path) -> int:
        # Counted while streaming: a Content-Length header may be absent or wrong.
        limit, size = self.config.max_download_bytes, 0
        with partial.open("wb") as out:
            for chunk in response.iter_bytes(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    message = f"{self.provider}: the result is larger than {limit} bytes"
                    raise EngineError(message, code="upstream_error")
                out.write(chunk)
        return size

    def _retrying(self, label: str, context: EngineContext | None, attempt: Callable[[], T]) -> T:
        retries = self.config.max_retries
        for number in range(retries + 1):
            try:
                return attempt()
            except _Transient as exc:
                if number == retries:
                    logger.warning("%s failed %d times (last: %s)", label, number + 1, exc.reason)
                    # Where it went (the provider's paths) is for the log, not the client.
                    message = (
                        f"{self.provider}: a request failed {number + 1} times "
                        f"(last: {exc.reason})"
                    )
                    raise EngineError(message, code="upstream_error") from exc
                delay = self._delay(number, exc.delay)
                logger.warning("%s failed (%s); retry in %.2fs", label, exc.reason, delay)
                pause(context, delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _delay(self, number: int, asked: float | None) -> float:
        if asked is not None:
            return min(asked, self.config.max_retry_after)
        base = min(self.config.retry_backoff * 2**number, self.config.max_retry_after)
        return base + random.uniform(0, base / 4)


def _raise_if_transient(response: httpx.Response) -> None:
    if response.status_code in RETRY_STATUSES:
        raise _Transient(f"HTTP {response.status_code}", retry_after(response.headers))


def _path(url: str) -> str:
    # Only the path goes to logs: query strings of signed result URLs are credentials.
    return httpx.URL(url).path


def poll_until_finished(
    fetch: Callable[[], TaskSnapshot],
    *,
    context: EngineContext,
    config: UpstreamSettings,
    submitted_at: float,
    estimate: DurationEstimate,
    cancel: Callable[[], None],
) -> TaskSnapshot:
    """Poll until the task succeeds, fails or is cancelled; forward our cancel upstream."""
    delay = config.poll_interval
    reported = 0.0
    unknown_since: float | None = None
    try:
        while True:
            context.raise_if_cancelled()
            snapshot = fetch()
            elapsed = time.time() - submitted_at
            if snapshot.state not in UNFINISHED:
                if snapshot.state == "succeeded":
                    estimate.record(elapsed)
                return snapshot
            if snapshot.state != "unknown":
                unknown_since = None
            elif unknown_since is None:
                unknown_since = time.monotonic()
            if _overdue(config, elapsed, unknown_since):
                cancel()  # stop paying for a task nobody will collect
                raise EngineError("the provider did not finish the task in time", code="timeout")
            guess = (
                snapshot.progress if snapshot.progress is not None else estimate.fraction(elapsed)
            )
            reported = max(reported, min(guess, 1.0))
            context.report_progress(reported)
            pause(context, delay * random.uniform(0.8, 1.2))
            delay = min(delay * 1.5, config.max_poll_interval)
    except JobCancelled as exc:
        # Only a plain cancel is forwarded. A subclass (the worker shutting down, so the
        # job goes back to the queue) or any other exception leaves the task running for
        # the next attempt to resume.
        if type(exc) is JobCancelled:
            cancel()
        raise


def _overdue(config: UpstreamSettings, elapsed: float, unknown_since: float | None) -> bool:
    if elapsed > config.timeout:
        return True
    return unknown_since is not None and time.monotonic() - unknown_since > config.unknown_timeout


class ProviderEngine:
    """Submit once, poll, collect: the life of one job on a hosted provider.

    Subclasses implement `submit`, `fetch`, `cancel` and `collect`.
    """

    name = "upstream"

    def __init__(self, config: UpstreamSettings, *, transport: httpx.BaseTransport | None = None):
        self.config = config
        self.client = UpstreamClient(config, provider=self.name, transport=transport)
        self.estimate = DurationEstimate(config.expected_seconds)

    def generate(self, request: GenerationRequest, context: EngineContext) -> VideoFile:
        """Run `request` on the provider, resuming a task an earlier attempt submitted."""
        # 1. Submit, unless an earlier attempt already did (never pay twice)
        task_id, submitted_at = self._resume_or_submit(request, context)
        # 2. Poll until the provider is done
        final = poll_until_finished(
            lambda: self.fetch(task_id, context),
            context=context,
            config=self.config,
            submitted_at=submitted_at,
            estimate=self.estimate,
            cancel=lambda: self.cancel(task_id),
        )
        # 3. Map the outcome, downloading the video on success
        logger.info("job %s: %s task %s ended %s", request.job_id, self.name, task_id, final.state)
        if final.state == "cancelled":
            raise JobCancelled(f"the {self.name} task was cancelled")
        return self.collect(request, context, task_id, final)

    def _resume_or_submit(
        self, request: GenerationRequest, context: EngineContext
    ) -> tuple[str, float]:
        state = context.state
        if state.get("task_id"):
            if state.get("provider", self.name) != self.name:
                raise EngineError(
                    f"this job was started on {state['provider']}, not {self.name}",
                    code="engine_error",
                )
            logger.info("job %s: resuming %s task %s", request.job_id, self.name, state["task_id"])
            return str(state["task_id"]), float(state.get("submitted_at") or time.time())
        context.raise_if_cancelled()
        task_id = self.submit(request, context)
        submitted_at = time.time()
        context.save_state(
            {"provider": self.name, "task_id": task_id, "submitted_at": submitted_at}
        )
        logger.info("job %s: submitted to %s as task %s", request.job_id, self.name, task_id)
        return task_id, submitted_at

    def submit(self, request: GenerationRequest, context: EngineContext) -> str:
        """Create the provider task; return its id."""
        raise NotImplementedError

    def fetch(self, task_id: str, context: EngineContext) -> TaskSnapshot:
        """Look at the provider task once."""
        raise NotImplementedError

    def cancel(self, task_id: str) -> None:
        """Ask the provider to cancel the task; best effort, never raises."""
        raise NotImplementedError

    def collect(
        self, request: GenerationRequest, context: EngineContext, task_id: str, final: TaskSnapshot
    ) -> VideoFile:
        """Turn a finished task into a downloaded video, or raise its failure."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.close()


def check_mp4(path: Path, provider: str) -> None:
    """Refuse a download that is not an MP4 (an error page, say) before the worker uses it."""
    with path.open("rb") as file:
        head = file.read(12)
    if head[4:8] != b"ftyp":
        raise EngineError(f"{provider} returned a result that is not an MP4", code="upstream_error")
