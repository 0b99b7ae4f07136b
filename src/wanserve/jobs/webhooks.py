"""Webhook events the Standard Webhooks way: where they go, what they say, how they are signed.

A job records its targets when it is made (the operator's `WEBHOOK_URL`, its key's own
endpoint, the client's `webhook_url`); its terminal change writes one outbox row per target
in the same transaction (`events_for`), and `jobs.delivery` sends them. Secrets are never
stored with the rows: a row names which secret signs it, looked up when it is sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from wanserve.jobs.db import OutboxRow
from wanserve.jobs.model import JobStatus, owner_of
from wanserve.settings import Settings, WebhookTarget

GLOBAL, KEY = "global", "key"
PENDING, DELIVERED, GONE, FAILED = "pending", "delivered", "gone", "failed"
EVENT_TYPES = {
    JobStatus.COMPLETED: "video.completed",
    JobStatus.FAILED: "video.failed",
    JobStatus.CANCELLED: "video.failed",  # on the wire a cancelled job is failed + its code
}


class WebhookConfig:
    """The configured endpoints and secrets: the operator's, and each key's own."""

    def __init__(self, settings: Settings):
        self.url = settings.webhook_url
        self.secret = settings.webhook_secret
        # Keyed by owner id; the configuration may name an API key or an owner id.
        self._keys: dict[str, WebhookTarget] = {}
        for name, target in settings.webhooks.items():
            self._keys[name] = target
            self._keys[owner_of(name)] = target

    def targets(self, owner: str, client_url: str | None = None) -> list[dict[str, Any]]:
        """The targets a new job of `owner` records; `client_url` is its `webhook_url`."""
        targets: list[dict[str, Any]] = []
        if self.url:
            targets.append({"url": self.url, "secret": GLOBAL, "checked": False})
        own = self._keys.get(owner)
        if own is not None and own.url:
            targets.append({"url": own.url, "secret": KEY, "checked": False})
        if client_url:
            targets.append(
                {"url": client_url, "secret": self.client_secret(owner), "checked": True}
            )
        return targets

    def client_secret(self, owner: str) -> str:
        """Which secret signs a client's own `webhook_url`: its key's, else the operator's."""
        own = self._keys.get(owner)
        return KEY if own is not None and own.secret is not None else GLOBAL

    def can_sign(self, owner: str) -> bool:
        """Whether a client's `webhook_url` could be signed at all."""
        return self.secret_for(self.client_secret(owner), owner) is not None

    def secret_for(self, which: str, owner: str) -> str | None:
        """The `whsec_` secret named by an outbox row, or None if it is no longer configured."""
        if which == KEY:
            own = self._keys.get(owner)
            secret = own.secret if own is not None else None
        else:
            secret = self.secret
        return secret.get_secret_value() if secret is not None else None


def events_for(
    job_id: str,
    owner: str,
    targets: list[dict[str, Any]],
    status: JobStatus,
    now: float,
    error_code: str | None,
) -> list[OutboxRow]:
    """The outbox rows of a job that just reached `status` (none unless it is terminal)."""
    event_type = EVENT_TYPES.get(status)
    if event_type is None or not targets:
        return []
    event_id = f"evt_{uuid.uuid4().hex}"
    data: dict[str, Any] = {"id": job_id}
    if error_code is not None and event_type == "video.failed":
        data["error"] = {"code": error_code}
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created_at": int(now),
            "data": data,
        },
        separators=(",", ":"),
    )
    return [
        OutboxRow(
            id=f"wh_{uuid.uuid4().hex}",
            event_id=event_id,
            job_id=job_id,
            owner=owner,
            url=str(target["url"]),
            secret=str(target.get("secret", GLOBAL)),
            checked=bool(target.get("checked", False)),
            body=body,
            state=PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
        for target in targets
    ]


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and base64 HMAC-SHA256 of `id.timestamp.body`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }
