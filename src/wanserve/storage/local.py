"""Files under one root folder."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from wanserve.storage.base import StoredObject

# Below this much free space the disk counts as full: no job's files would fit.
MIN_FREE_BYTES = 1024 * 1024


class LocalStorage:
    """Storage on the local file system; writes go to a temp name, then rename."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys are chosen by the server, but refuse escapes all the same.
        if self.root not in path.parents:
            raise ValueError(f"storage key escapes the root: {key!r}")
        return path

    def _atomic_write(self, key: str, write: object) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)  # type: ignore[operator]
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, atomically."""
        self._atomic_write(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the file at `path` under `key`, atomically."""

        def copy(out: object) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out)  # type: ignore[arg-type]

        self._atomic_write(key, copy)

    def download_to(self, key: str, path: Path) -> None:
        """Copy the object at `key` into a local file."""
        shutil.copyfile(self._path(key), path)

    def local_path(self, key: str) -> Path | None:
        """The file holding `key`."""
        return self._path(key)

    def size(self, key: str) -> int | None:
        """Size in bytes, or None when there is no such object."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def presigned_url(self, key: str, expires_in: int) -> str | None:
        """Local files are served by the API itself."""
        return None

    def delete_prefix(self, prefix: str) -> None:
        """Delete the folder (or file) named by `prefix`."""
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every file under `prefix`, with when it was last written."""
        for path in self._path(prefix.rstrip("/")).rglob("*"):
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted while we looked
            if path.is_file():
                yield StoredObject(path.relative_to(self.root).as_posix(), modified)

    def check(self) -> None:
        """Raise if the root cannot be written, or its disk is full (ENOSPC)."""
        if shutil.disk_usage(self.root).free < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.root))
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".ready-")
        os.close(fd)
        os.unlink(tmp)
