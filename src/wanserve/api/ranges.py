"""HTTP byte ranges on `/content`, read as RFC 9110 (section 14) says.

Decided here, before Starlette's `FileResponse` sees the request, so that every answer is
ours: a Range header we do not understand (another unit, bad syntax, `bytes=5-1`, more
than `MAX_RANGES` parts) is ignored and the whole file is sent, as the RFC allows; a valid
one of which no range overlaps the file is a 416 in the API's JSON error shape with
`Content-Range: bytes */size`; ranges past the end are dropped from the rest.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from wanserve.errors import RangeNotSatisfiable

ByteRange = tuple[int, int]  # first and last byte, inclusive
MAX_RANGES = 100  # Starlette's own cap; a longer list is ignored there too
_SPEC = re.compile(r"^(\d*)-(\d*)$")


def requested_ranges(header: str | None, size: int) -> list[ByteRange] | None:
    """The byte ranges to send, or None for the whole file; raises when none is satisfiable."""
    if header is None:
        return None
    unit, equals, range_set = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = [part.strip() for part in range_set.split(",") if part.strip()]
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for spec in specs:
        match = _SPEC.match(spec)
        if match is None or match.groups() == ("", ""):
            return None
        first, last = match.groups()
        if first and last and int(last) < int(first):
            return None  # an invalid range-spec makes the whole header invalid
        if not first:  # the last `last` bytes
            if int(last) > 0 and size > 0:
                ranges.append((max(size - int(last), 0), size - 1))
        elif int(first) < size:
            ranges.append((int(first), min(int(last), size - 1) if last else size - 1))
    if not ranges:
        raise RangeNotSatisfiable(
            f"None of the requested byte ranges lies within the {size} bytes of the file.",
            size=size,
        )
    return ranges


class RangedFile(FileResponse):
    """A `FileResponse` that sends exactly the ranges `requested_ranges` accepted."""

    ranges: list[ByteRange] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve with the request's Range replaced by the checked one (or none)."""
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"range", b"if-range")]
        if self.ranges:
            spec = ",".join(f"{first}-{last}" for first, last in self.ranges)
            headers.append((b"range", f"bytes={spec}".encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)


def ranged_file(request_headers: Headers, path: Path, **kwargs: Any) -> RangedFile:
    """The file at `path`, honouring the request's Range and If-Range.

    Raises `FileNotFoundError` when the file is gone and `RangeNotSatisfiable` for a 416.
    """
    stat = os.stat(path)
    response = RangedFile(path, stat_result=stat, **kwargs)
    etag, modified = response.headers.get("etag"), response.headers.get("last-modified")
    if if_range_holds(request_headers, etag, modified):
        response.ranges = requested_ranges(request_headers.get("range"), stat.st_size)
    return response


def if_range_holds(request_headers: Headers, etag: str | None, last_modified: str | None) -> bool:
    """False when If-Range names another version: the Range is then ignored (RFC 9110)."""
    condition = request_headers.get("if-range")
    if condition is None:
        return True
    return not condition.startswith("W/") and condition in (etag, last_modified)
