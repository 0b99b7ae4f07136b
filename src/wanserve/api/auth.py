"""Bearer API keys; each job belongs to the key that made it."""

from __future__ import annotations

import hmac

from fastapi import Request
from pydantic import SecretStr

from wanserve.errors import Unauthorized
from wanserve.jobs.model import owner_of
from wanserve.logs import OWNER_ID

OPEN_OWNER = "public"
__all__ = ["OPEN_OWNER", "KeyCheck", "bearer_matches", "owner_of", "require_admin"]


class KeyCheck:
    """Resolves the caller of a request to an owner id, or refuses it."""

    def __init__(self, keys: list[str]):
        self._owners = {owner_of(k): k for k in keys}

    @property
    def open(self) -> bool:
        """No keys configured: everyone is the one public owner."""
        return not self._owners

    def __call__(self, request: Request) -> str:
        """The owner id for this request's Bearer token (also put in the log context)."""
        if self.open:
            OWNER_ID.set(OPEN_OWNER)
            return OPEN_OWNER
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "You didn't provide an API key. Use 'Authorization: Bearer YOUR_KEY'."
            )
        owner = owner_of(token)
        expected = self._owners.get(owner)
        if expected is None or not hmac.compare_digest(expected, token):
            raise Unauthorized("Incorrect API key provided.")
        OWNER_ID.set(owner)
        return owner


def require_admin(request: Request, admin_key: SecretStr | None) -> None:
    """Raise `Unauthorized` unless the request's Bearer token is the admin key."""
    if not bearer_matches(request, admin_key.get_secret_value() if admin_key else None):
        hint = "" if admin_key is not None else " (WANSERVE_ADMIN_KEY is not set)"
        raise Unauthorized(f"This endpoint needs the admin key{hint}.")


def bearer_matches(request: Request, expected: str | None) -> bool:
    """Whether the request's Bearer token is `expected`, compared in constant time."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
    return (
        expected is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )
