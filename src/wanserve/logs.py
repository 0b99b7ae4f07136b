"""Logging set-up for the CLI and worker processes."""

from __future__ import annotations

import logging
import os


def configure_logging(level: str | None = None) -> None:
    """Plain timestamped lines on stderr; level from `WANSERVE_LOG_LEVEL` (default INFO)."""
    logging.basicConfig(
        level=(level or os.environ.get("WANSERVE_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO, and provider result URLs carry signatures.
    logging.getLogger("httpx").setLevel(logging.WARNING)
