"""Log lines stay one line each: control characters from clients are escaped."""

from __future__ import annotations

import io
import logging

import pytest

from wanserve.logs import configure_logging, escape_controls


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("video_\x00x", "video_\\x00x"),
        ("a\nb\r\nc", "a\\nb\\r\\nc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("tab\there", "tab\\there"),
        ("del\x7f c1\x85 line\u2028sep", "del\\x7f c1\\x85 line\\u2028sep"),
        ("half \ud800 pair", "half \\ud800 pair"),
        ("plain text, unicode é 猫 🐈", "plain text, unicode é 猫 🐈"),
    ],
)
def test_escape_controls(raw, logged):
    assert escape_controls(raw) == logged


@pytest.fixture
def log_output() -> io.StringIO:
    """What the root logger writes once `configure_logging` has set up its handlers."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    configure_logging("INFO")
    yield stream
    root.removeHandler(handler)


def test_a_client_string_cannot_forge_a_log_line(log_output):
    logger = logging.getLogger("wanserve.test_logs")
    forged = "x\nERROR job video_1: forged\x00"
    logger.warning("unknown model %s", forged)
    try:
        raise ValueError(f"bad value {forged}")
    except ValueError:
        logger.exception("request %r failed", "/v1/videos/\x00")
    lines = log_output.getvalue().splitlines()
    assert lines[0] == "WARNING unknown model x\\nERROR job video_1: forged\\x00"
    assert not any(line.startswith("ERROR job") for line in lines)
    assert "\x00" not in log_output.getvalue()
    assert lines[1] == "ERROR request '/v1/videos/\\x00' failed"
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert lines[-1] == "ValueError: bad value x\\nERROR job video_1: forged\\x00"


def test_a_chained_exception_message_is_escaped_too(log_output):
    try:
        try:
            raise KeyError("inner\nERROR forged one")
        except KeyError as exc:
            raise RuntimeError("outer\nERROR forged two") from exc
    except RuntimeError:
        logging.getLogger("wanserve.test_logs").exception("failed")
    lines = log_output.getvalue().splitlines()
    assert not any(line.startswith("ERROR forged") for line in lines), lines
    assert "RuntimeError: outer\\nERROR forged two" in lines
