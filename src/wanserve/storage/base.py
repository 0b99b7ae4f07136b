"""The storage interface: flat keys such as `jobs/<job id>/video.mp4`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class StoredObject:
    """One stored object: its key and when it was last written (Unix time)."""

    key: str
    modified: float


class Storage(Protocol):
    """Object storage with server-chosen keys."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, atomically."""

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key`, atomically."""

    def download_to(self, key: str, path: Path) -> None:
        """Copy the object at `key` into a local file."""

    def local_path(self, key: str) -> Path | None:
        """A local file holding `key`, when the storage is local; else None."""

    def size(self, key: str) -> int | None:
        """Size in bytes, or None when there is no such object."""

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """A URL clients can fetch directly, when the backend offers one."""

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object whose key starts with `prefix`."""

    def objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix` (a folder: end it with `/`)."""

    def check(self) -> None:
        """Raise if the storage cannot be written (readiness probe)."""
