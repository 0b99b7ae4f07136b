"""A media fetcher for API tests that can dial 127.0.0.1 only, whatever the policy says.

Tests here send URLs naming internal addresses on purpose; if the SSRF policy were ever
broken, this keeps the test run itself from reaching beyond loopback.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore

from wanserve.media.fetch import MediaFetcher
from wanserve.settings import Settings


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """Opens TCP connections to 127.0.0.1 and refuses (and records) every other target."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.refused: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect if `host` is 127.0.0.1."""
        if host != "127.0.0.1":
            self.refused.append(f"{host}:{port}")
            raise httpcore.ConnectError("test network: loopback only")
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        """Sleep."""
        await self.inner.sleep(seconds)


async def _no_dns(host: str, port: int) -> list[str]:
    # Only literal addresses and localhost: tests never query a real resolver.
    if host == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"test resolver: no DNS for {host}")


def loopback_fetcher(settings: Settings, backend: LoopbackOnly | None = None) -> MediaFetcher:
    """A fetcher configured from `settings` that never leaves 127.0.0.1."""
    return MediaFetcher(
        allowed_hosts=settings.media_allowed_hosts,
        connect_timeout=settings.fetch_connect_timeout,
        total_timeout=settings.fetch_timeout,
        resolver=_no_dns,
        network_backend=backend or LoopbackOnly(),
    )
