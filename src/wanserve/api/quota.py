"""Per-key limits on creating jobs: a token-bucket rate and a cap on unfinished jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from fastapi import Depends, Request

from wanserve.api.services import Owner
from wanserve.errors import RateLimited, TooManyUnfinished
from wanserve.jobs.buckets import SharedBucket
from wanserve.jobs.store import JobStore
from wanserve.settings import Settings


class TokenBucket:
    """Per-owner token buckets: `burst` tokens at most, refilled at `rate` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.capacity = float(max(burst, 1))
        self._clock = clock
        # owner -> (tokens, when counted). Owners are API keys already checked, so the
        # map holds at most one entry per configured key.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, owner: str) -> float:
        """Take one token for `owner`: 0.0 when granted, else seconds until one is due."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.get(owner, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[owner] = (tokens - 1.0, now)
                return 0.0
            self._buckets[owner] = (tokens, now)
            return (1.0 - tokens) / self.rate


class Bucket(Protocol):
    """A token bucket per owner (in this process, or shared through the store)."""

    rate: float
    capacity: float

    def take(self, owner: str) -> float:
        """Take one token for `owner`: 0.0 when granted, else seconds until one is due."""
        ...


class CreateQuota:
    """Decides whether an owner may create one more job now."""

    def __init__(
        self,
        store: JobStore,
        *,
        rate: float,
        burst: int,
        max_unfinished: int,
        clock: Callable[[], float] = time.monotonic,
        bucket: Bucket | None = None,
    ):
        self.store = store
        self.bucket = bucket or (TokenBucket(rate, burst, clock) if rate > 0 else None)
        self.max_unfinished = max_unfinished

    @classmethod
    def from_settings(cls, settings: Settings, store: JobStore) -> CreateQuota:
        """The limits `settings` configure (0 turns one off), the rate kept in the store so
        that every API process counts against the same buckets."""
        rate, burst = settings.create_rate, settings.create_burst
        return cls(
            store,
            rate=rate,
            burst=burst,
            max_unfinished=settings.max_unfinished_jobs,
            bucket=SharedBucket(store, rate, burst) if rate > 0 else None,
        )

    def check(self, owner: str) -> None:
        """Raise `RateLimited` when `owner` creates too fast or has too many open jobs."""
        # The bucket first: it is cheap, and it also bounds how often we count rows.
        if self.bucket is not None:
            wait = self.bucket.take(owner)
            if wait > 0:
                raise RateLimited(
                    "Too many create requests for this API key: "
                    f"at most {self.bucket.rate:g} per second "
                    f"(bursts of {self.bucket.capacity:g}).",
                    retry_after=wait,
                )
        # Only an early refusal (before any media is fetched): the store decides for good,
        # atomically with the insert.
        if self.max_unfinished and self.store.count_unfinished(owner) >= self.max_unfinished:
            raise TooManyUnfinished(self.max_unfinished)


def create_quota(request: Request, owner: Owner) -> None:
    """FastAPI dependency of create routes: enforce the caller's `CreateQuota`."""
    quota: CreateQuota = request.app.state.create_quota
    quota.check(owner)


CreateQuotaCheck = Depends(create_quota)
