"""Fixtures of the end-to-end tests live in e2e_helpers and playground_page (importable by
the tests too)."""

from e2e_helpers import server_factory
from playground_page import browser, playground

__all__ = ["browser", "playground", "server_factory"]
