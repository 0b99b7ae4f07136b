"""Fixtures of the end-to-end tests live in e2e_helpers (importable by the tests too)."""

from e2e_helpers import server_factory

__all__ = ["server_factory"]
