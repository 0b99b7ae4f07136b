"""Waiting out a job store that is briefly away: retries with exponential backoff.

A dropped connection, a database restart or a full disk is not the job's fault: the
worker waits and tries again rather than failing the job or crashing its process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from wanserve.errors import StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Backoff:
    """Delays that double from `first` up to `cap`; `reset` after a success."""

    def __init__(self, first: float = 0.05, cap: float = 5.0):
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        """The delay before the next try (and double the one after)."""
        delay, self._next = self._next, min(self.cap, self._next * 2)
        return delay

    def reset(self) -> None:
        """Start again from `first`."""
        self._next = self.first


def persist(call: Callable[[], T], *, stopping: threading.Event, what: str) -> T:
    """`call()` until the store takes it, waiting out `StoreUnavailable` with backoff.

    Gives up only when `stopping` is set (re-raising the last `StoreUnavailable`): the
    store's leases then settle what a stopped worker left unfinished.
    """
    backoff = Backoff()
    while True:
        try:
            return call()
        except StoreUnavailable:
            delay = backoff.next()
            logger.warning("%s: job store unavailable, retrying in %.2f s", what, delay)
            if stopping.wait(delay):
                raise
