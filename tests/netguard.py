"""Keeping test runs on loopback: a network backend and a fetcher that dial 127.0.0.1 only.

Tests send URLs naming internal addresses on purpose; if the SSRF policy were ever broken,
this keeps the test run itself from reaching beyond loopback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import httpcore

from wanserve.media.fetch import MediaFetcher
from wanserve.settings import Settings


@dataclass
class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """The real network backend: records every address asked for, dials only 127.0.0.1."""

    addresses: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    inner: httpcore.AsyncNetworkBackend = field(default_factory=httpcore.AnyIOBackend)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect if `host` is 127.0.0.1; record and refuse anything else."""
        self.addresses.append(host)
        if host != "127.0.0.1":
            self.refused.append(f"{host}:{port}")
            raise httpcore.ConnectError("test network: loopback only")
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        """Sleep."""
        await self.inner.sleep(seconds)


async def no_dns(host: str, port: int) -> list[str]:
    """Only literal addresses and localhost: tests never query a real resolver."""
    if host == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"test resolver: no DNS for {host}")


def loopback_fetcher(settings: Settings, backend: LoopbackOnly | None = None) -> MediaFetcher:
    """A fetcher configured from `settings` that never leaves 127.0.0.1."""
    return MediaFetcher(
        allowed_hosts=settings.media_allowed_hosts,
        connect_timeout=settings.fetch_connect_timeout,
        total_timeout=settings.fetch_timeout,
        resolver=no_dns,
        network_backend=backend or LoopbackOnly(),
    )
