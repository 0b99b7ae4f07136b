"""Logging set-up for the CLI and worker processes: secrets redacted, control characters
escaped, the request, job and key owner of each line from context variables, text or JSON."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import traceback
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType

# What a line is about, set where it becomes known (the request middleware, the key check,
# intake, the worker running a job) and read by `ContextFilter` for every record.
REQUEST_ID: ContextVar[str | None] = ContextVar("wanserve_request_id", default=None)
JOB_ID: ContextVar[str | None] = ContextVar("wanserve_job_id", default=None)
OWNER_ID: ContextVar[str | None] = ContextVar("wanserve_owner_id", default=None)
_CONTEXT = {"request_id": REQUEST_ID, "job_id": JOB_ID, "owner_id": OWNER_ID}

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

# What could forge or garble a log line when a client's text is logged: C0 and C1
# controls (NUL, CR, LF, ESC...), DEL, Unicode line separators and lone surrogates.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# Tracebacks are multi-line by nature; everything else in them is escaped the same way.
_CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with control characters written as escapes (`\\x00`, `\\n`), as repr() does."""
    pattern = _CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS
    return pattern.sub(_escape, text)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def format_exception(exc_info: ExcInfo) -> str:
    """A traceback as logging prints it, but with each exception's message escaped.

    Only the traceback's own lines break: a newline inside an exception message (which
    may quote a client's text) is written as `\\n`, so it cannot start a forged line.
    """
    text = logging.Formatter().formatException(exc_info)
    error: BaseException | None = exc_info[1]
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        message = "".join(traceback.format_exception_only(type(error), error)).rstrip("\n")
        text = text.replace(message, escape_controls(message))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return text


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
            record.exc_text = format_exception(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class EscapeControls(logging.Filter):
    """A handler filter that escapes control characters, so one record is one line.

    A NUL or a newline a client put in a path, header or field never reaches the log
    raw; a traceback keeps its own line breaks and nothing else (see `format_exception`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format: leave the record for the handler to report
            return True
        record.msg, record.args = escape_controls(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = format_exception(record.exc_info)
        if record.exc_text:
            record.exc_text = escape_controls(record.exc_text, keep_newlines=True)
        if record.stack_info:
            record.stack_info = escape_controls(record.stack_info, keep_newlines=True)
        return True


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Set `request_id`, `job_id` and/or `owner_id` for every line logged in the block."""
    tokens = [(_CONTEXT[name], _CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """A handler filter that puts the context variables on each record (None when unset)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drops it."""
        for name, variable in _CONTEXT.items():
            if getattr(record, name, None) is None:
                setattr(record, name, variable.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context, a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (its text already redacted and escaped)."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
        }
        for name in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = format_exception(record.exc_info)
        if record.exc_text:
            line["traceback"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(level: str | None = None, log_format: str | None = None) -> None:
    """Lines on stderr, plain or JSON (`WANSERVE_LOG_FORMAT`: text, json); the level from
    `WANSERVE_LOG_LEVEL` (default INFO)."""
    chosen = (log_format or os.environ.get("WANSERVE_LOG_FORMAT", "text")).strip().lower()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    # No-op where the root logger already has handlers (a test's, an embedding app's).
    logging.basicConfig(
        level=(level or os.environ.get("WANSERVE_LOG_LEVEL", "INFO")).upper(), handlers=[handler]
    )
    # On the handlers, not the loggers: a logger's filter misses records that its
    # children (uvicorn, httpx, ours) pass up to it.
    # Redaction first: its patterns end at whitespace that escaping would hide.
    for root_handler in logging.getLogger().handlers:
        for kind in (RedactSecrets, EscapeControls, ContextFilter):
            if not any(isinstance(f, kind) for f in root_handler.filters):
                root_handler.addFilter(kind())
    # httpx logs every request URL at INFO, and provider result URLs carry signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic narrates every migration step at INFO: a quiet start-up says what matters.
    logging.getLogger("alembic").setLevel(logging.WARNING)
