"""Sending the webhook outbox: due rows claimed under a lease, signed, posted, settled.

Any number of dispatchers (one per worker process) may run at once: a row is claimed with
a compare-and-set that pushes its next attempt a lease ahead, so one dispatcher sends it;
one that dies mid-send leaves the row to come due again when the lease runs out. Delivery
is therefore at least once, and every attempt carries the row's id as `webhook-id`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

import anyio
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from wanserve.errors import MediaError, StoreUnavailable
from wanserve.jobs.backoff import Backoff
from wanserve.jobs.db import OutboxRow, writer
from wanserve.jobs.sql import outage_as_unavailable
from wanserve.jobs.webhooks import DELIVERED, FAILED, GONE, PENDING, WebhookConfig, signed_headers
from wanserve.logs import log_context
from wanserve.media.fetch import MediaFetcher, redact_url
from wanserve.settings import Settings

logger = logging.getLogger(__name__)

LEASE = 60.0  # how long a claimed row is left to its dispatcher before another may send it
BATCH = 20
CONCURRENCY = 8
RETRY_CAP = 3600.0
IDLE_WAIT = 1.0
NO_SECRET = "no webhook secret is configured for it any more"
# Every address: the operator's own endpoints are trusted (still pinned, never redirected).
ANYWHERE = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class Delivery:
    """One claimed row, as much as sending it needs."""

    id: str
    job_id: str
    owner: str
    url: str
    secret: str
    checked: bool
    body: str
    attempts: int  # including this one
    created_at: float


class Outbox:
    """The outbox table: what is due, claims, outcomes, counts."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float]):
        self.clock = clock
        self._reads = sessionmaker(engine)
        self._writes = sessionmaker(writer(engine))

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        with outage_as_unavailable(), (self._writes if write else self._reads).begin() as session:
            yield session

    def claim_due(self, limit: int = BATCH) -> list[Delivery]:
        """Claim up to `limit` due rows for this dispatcher (a lease of `LEASE` each)."""
        now = self.clock()
        with self._session() as session:
            due = session.execute(
                select(OutboxRow.id, OutboxRow.next_attempt_at)
                .where(OutboxRow.state == PENDING, OutboxRow.next_attempt_at <= now)
                .order_by(OutboxRow.next_attempt_at)
                .limit(limit)
            ).all()
        claimed = []
        for row_id, seen in due:
            with self._session(write=True) as session:
                won = session.execute(
                    update(OutboxRow)
                    .where(
                        OutboxRow.id == row_id,
                        OutboxRow.state == PENDING,
                        OutboxRow.next_attempt_at == seen,
                    )
                    .values(next_attempt_at=now + LEASE, attempts=OutboxRow.attempts + 1)
                ).rowcount  # type: ignore[attr-defined]
                row = session.get(OutboxRow, row_id) if won else None
                if row is not None:
                    claimed.append(
                        Delivery(
                            row.id,
                            row.job_id,
                            row.owner,
                            row.url,
                            row.secret,
                            row.checked,
                            row.body,
                            row.attempts,
                            row.created_at,
                        )
                    )
        return claimed

    def settle(
        self,
        delivery: Delivery,
        *,
        state: str,
        status: int | None,
        error: str | None,
        next_attempt_at: float,
    ) -> None:
        """Record one attempt's outcome (unless another dispatcher has claimed it since)."""
        with self._session(write=True) as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == delivery.id, OutboxRow.attempts == delivery.attempts)
                .values(
                    state=state,
                    last_status=status,
                    last_error=error,
                    last_attempt_at=self.clock(),
                    next_attempt_at=next_attempt_at,
                )
            )

    def counts(self) -> dict[str, int]:
        """Rows in each state (pending, delivered, gone, failed)."""
        with self._session() as session:
            rows = session.execute(
                select(OutboxRow.state, func.count()).group_by(OutboxRow.state)
            ).all()
        return {state: int(count) for state, count in rows}

    def of_job(self, job_id: str) -> list[OutboxRow]:
        """The deliveries of one job (operators, tests)."""
        with self._session() as session:
            rows = session.scalars(
                select(OutboxRow).where(OutboxRow.job_id == job_id).order_by(OutboxRow.created_at)
            ).all()
            session.expunge_all()
            return list(rows)


class Dispatcher:
    """Sends due deliveries; `run` loops until stopped, `run_once` sends one batch."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        *,
        checked: MediaFetcher,
        trusted: MediaFetcher,
        jitter: Callable[[], float] = random.random,
    ):
        self.settings = settings
        self.outbox = outbox
        self.config = WebhookConfig(settings)
        self._checked = checked  # clients' URLs: the media SSRF rules
        self._trusted = trusted
        self._jitter = jitter

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, clock: Callable[[], float]) -> Self:
        """A dispatcher on the store's database with fetchers built from settings."""
        timeout = settings.webhook_timeout
        connect = min(settings.fetch_connect_timeout, timeout)
        return cls(
            settings,
            Outbox(engine, clock=clock),
            checked=MediaFetcher(
                allowed_hosts=settings.media_allowed_hosts,
                connect_timeout=connect,
                total_timeout=timeout,
            ),
            trusted=MediaFetcher(
                allowed_hosts=ANYWHERE, connect_timeout=connect, total_timeout=timeout
            ),
        )

    def run(self, stopping: threading.Event) -> None:
        """Send what comes due until `stopping`; a store outage is waited out."""
        backoff = Backoff(first=IDLE_WAIT, cap=30.0)
        while not stopping.is_set():
            try:
                sent = self.run_once()
            except StoreUnavailable:
                stopping.wait(backoff.next())
                continue
            except Exception:
                logger.exception("webhooks: dispatch failed")
                stopping.wait(backoff.next())
                continue
            backoff.reset()
            if not sent:
                stopping.wait(IDLE_WAIT)

    def run_once(self) -> int:
        """Claim and send one batch of due deliveries; how many were sent."""
        deliveries = self.outbox.claim_due()
        if deliveries:
            anyio.run(self._send_all, deliveries)
        return len(deliveries)

    async def _send_all(self, deliveries: list[Delivery]) -> None:
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def send(delivery: Delivery) -> None:
            async with limiter:
                status, error = await self._post(delivery)
            await anyio.to_thread.run_sync(self._settle, delivery, status, error)

        async with anyio.create_task_group() as group:
            for delivery in deliveries:
                group.start_soon(send, delivery)

    async def _post(self, delivery: Delivery) -> tuple[int | None, str | None]:
        secret = self.config.secret_for(delivery.secret, delivery.owner)
        if secret is None:
            return None, NO_SECRET
        body = delivery.body.encode()
        # Wall time, not the store's clock: receivers check it against their own.
        headers = signed_headers(secret, delivery.id, int(time.time()), body)
        fetcher = self._checked if delivery.checked else self._trusted
        try:
            status = await fetcher.post(
                delivery.url, body, headers, what="the webhook URL", param="webhook_url"
            )
        except MediaError as exc:
            return None, exc.message
        return status, None if 200 <= status < 300 else f"HTTP {status}"

    def retry_delay(self, attempts: int) -> float:
        """Exponential from `WEBHOOK_FIRST_RETRY` (capped at an hour), half of it jittered."""
        base = min(self.settings.webhook_first_retry * 2 ** max(attempts - 1, 0), RETRY_CAP)
        return base / 2 + self._jitter() * base / 2

    def _settle(self, delivery: Delivery, status: int | None, error: str | None) -> None:
        with log_context(job_id=delivery.job_id, owner_id=delivery.owner):
            self._record(delivery, status, error)

    def _record(self, delivery: Delivery, status: int | None, error: str | None) -> None:
        now = self.outbox.clock()
        where = f"job {delivery.job_id}: webhook {delivery.id} to {redact_url(delivery.url)}"
        attempt = f"attempt {delivery.attempts}"
        if status is not None and 200 <= status < 300:
            state, next_at = DELIVERED, now
            logger.info("%s delivered (HTTP %d, %s)", where, status, attempt)
        elif status == 410:
            state, next_at = GONE, now
            logger.warning("%s: the receiver answered 410 Gone; not retried (%s)", where, attempt)
        else:
            next_at = now + self.retry_delay(delivery.attempts)
            expired = next_at > delivery.created_at + self.settings.webhook_retry_for
            state = FAILED if expired or error == NO_SECRET else PENDING
            if state == FAILED:
                logger.error("%s failed for good: %s (%s)", where, error, attempt)
            else:
                logger.warning(
                    "%s failed: %s (%s); next try in %.0f s", where, error, attempt, next_at - now
                )
        self.outbox.settle(
            delivery, state=state, status=status, error=error, next_attempt_at=next_at
        )
