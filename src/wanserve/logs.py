"""Logging set-up for the CLI and worker processes."""

from __future__ import annotations

import logging
import os
import re

REDACTED = "[redacted]"
# What must never reach a log line: Bearer tokens, credentials in URLs, signed-URL
# query parameters; each pattern with what replaces it.
_SECRETS = [
    (re.compile(r"(?i)(bearer\s+)[^\s'\",]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@'\"]+@"), rf"\1{REDACTED}@"),
    (
        re.compile(
            r"(?i)([?&](?:api[_-]?key|key|token|access_token|password|secret|sig|signature"
            r"|x-amz-signature|x-amz-credential|x-amz-security-token|ossaccesskeyid)=)"
            r"[^&\s'\"#]+"
        ),
        rf"\1{REDACTED}",
    ),
]


def redact(text: str) -> str:
    """`text` with API keys, URL credentials and URL signatures replaced by [redacted]."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """A handler filter that redacts every record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format: leave the record for the handler to report
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def configure_logging(level: str | None = None) -> None:
    """Plain timestamped lines on stderr; level from `WANSERVE_LOG_LEVEL` (default INFO)."""
    logging.basicConfig(
        level=(level or os.environ.get("WANSERVE_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    # On the handlers, not the loggers: a logger's filter misses records that its
    # children (uvicorn, httpx, ours) pass up to it.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
    # httpx logs every request URL at INFO, and provider result URLs carry signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
