"""Where media inputs and finished videos live: local files, or an S3-compatible bucket."""

from __future__ import annotations

from urllib.parse import urlparse

from wanserve.settings import Settings
from wanserve.storage.base import Storage
from wanserve.storage.local import LocalStorage


def open_storage(url: str, settings: Settings | None = None) -> Storage:
    """Storage for a `file://` or `s3://` URL (`settings` fills in the `s3_*` options)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(parsed.path)
    if parsed.scheme == "s3":
        # boto3 is an optional extra: import it only when S3 is asked for.
        from wanserve.storage.s3 import S3Storage

        return S3Storage.from_url(url, settings)
    raise ValueError(f"unsupported storage URL scheme: {parsed.scheme!r}")


__all__ = ["LocalStorage", "Storage", "open_storage"]
