"""Signed content URLs: a `video_url` that a client can fetch without its API key.

DashScope clients, browsers and video players download `video_url` directly, so when keys
are configured the URL carries an expiry and an HMAC of the path instead.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from wanserve.settings import Settings


class UrlSigner:
    """Signs and checks `(path, expires)` pairs with one server secret."""

    def __init__(self, secret: bytes):
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings) -> UrlSigner | None:
        """A signer when the server has keys (an open server needs no signatures)."""
        if not settings.api_keys and not settings.url_signing_key:
            return None
        # Derived from configuration, so every API process of one deployment agrees.
        material = settings.url_signing_key or "\0".join(sorted(settings.api_keys))
        return cls(hashlib.sha256(b"wanserve-url-signing\0" + material.encode()).digest())

    def signature(self, path: str, expires: int) -> str:
        """The hex HMAC of a path and its expiry time."""
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def query(self, path: str, expires: int) -> str:
        """The query string that makes `path` fetchable until `expires`."""
        return f"expires={expires}&signature={self.signature(path, expires)}"

    def verify(self, path: str, expires: int, signature: str) -> bool:
        """True for an unexpired, genuine signature of `path`."""
        if expires < time.time():
            return False
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        return hmac.compare_digest(self.signature(path, expires).encode(), signature.encode())
