"""Where media inputs and finished videos live: local files, or an S3-compatible bucket."""

from __future__ import annotations

from urllib.parse import urlparse

from wanserve.storage.base import Storage
from wanserve.storage.local import LocalStorage


def open_storage(url: str) -> Storage:
    """Storage for a `file://` (or `s3://`) URL."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(parsed.path)
    raise ValueError(f"unsupported storage URL scheme: {parsed.scheme!r}")


__all__ = ["LocalStorage", "Storage", "open_storage"]
