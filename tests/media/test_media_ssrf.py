"""SSRF vectors: each is refused, and nothing is ever dialled or reaches a listener."""

from __future__ import annotations

import re

import pytest
from media_netfakes import FakeResolver, Trap

from netguard import LoopbackOnly
from wanserve.errors import MediaError, MediaForbidden
from wanserve.media.fetch import MediaFetcher

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_leak")]

# Names a fake DNS answers; "{port}" in a URL is the trap listener's port.
DNS = {
    "localhost": [["127.0.0.1"]],
    "metadata.google.internal": [["169.254.169.254"]],
    "internal.example": [["10.1.2.3"]],
    "mixed.example": [["93.184.216.34", "10.0.0.1"]],
    "mapped.example": [["::ffff:192.168.0.1"]],
    "v6.example": [["2606:4700::1", "fd00::1"]],
    "scoped.example": [["fe80::1%eth0"]],
}

FORBIDDEN = {
    "loopback": "http://127.0.0.1:{port}/",
    "loopback-other": "http://127.5.6.7:{port}/",
    "localhost-name": "http://localhost:{port}/",
    "localhost-upper-dot": "http://LOCALHOST.:{port}/",
    "decimal": "http://2130706433:{port}/",
    "octal": "http://0177.0.0.1:{port}/",
    "octal-long": "http://017700000001:{port}/",
    "hex-part": "http://0x7f.0.0.1:{port}/",
    "hex-whole": "http://0x7F000001:{port}/",
    "hex-short": "http://0x7f.1:{port}/",
    "short-form": "http://127.1:{port}/",
    "mixed-radix": "http://0x7f.0.00.0x1:{port}/",
    "trailing-dot": "http://127.0.0.1.:{port}/",
    "zero": "http://0:{port}/",
    "unspecified": "http://0.0.0.0:{port}/",
    "percent-host": "http://%31%32%37.0.0.1:{port}/",
    "fullwidth-idna": "http://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11:{port}/",
    "ideographic-dots": "http://127\u30020\u30020\u30021:{port}/",
    "userinfo": "http://user:secret@127.0.0.1:{port}/",
    "userinfo-host-lure": "http://example.com@127.0.0.1:{port}/",
    "userinfo-at-twice": "http://a@example.com@127.0.0.1:{port}/",
    "fragment-lure": "http://127.0.0.1:{port}#@example.com/",
    "query-lure": "http://127.0.0.1:{port}?@example.com/",
    "https-loopback": "https://127.0.0.1:{port}/",
    "ipv6-loopback": "http://[::1]:{port}/",
    "ipv6-unspecified": "http://[::]:{port}/",
    "ipv4-mapped": "http://[::ffff:127.0.0.1]:{port}/",
    "ipv4-mapped-hex": "http://[::ffff:7f00:1]:{port}/",
    "ipv4-mapped-private": "http://[0:0:0:0:0:ffff:10.0.0.1]/",
    "ipv4-compatible": "http://[::127.0.0.1]:{port}/",
    "nat64": "http://[64:ff9b::7f00:1]:{port}/",
    "nat64-metadata": "http://[64:ff9b::a9fe:a9fe]/",
    "6to4": "http://[2002:7f00:1::1]:{port}/",
    "6to4-private": "http://[2002:c0a8:101::]/",
    "teredo-loopback": "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "ipv6-link-local": "http://[fe80::1]/",
    "ipv6-ula": "http://[fd12:3456:789a::1]/",
    "ipv6-ula-fc": "http://[fc00::1]/",
    "ipv6-site-local": "http://[fec0::1]/",
    "ipv6-multicast": "http://[ff02::1]/",
    "ipv6-documentation": "http://[2001:db8::1]/",
    "metadata-ip": "http://169.254.169.254/latest/meta-data/",
    "metadata-decimal": "http://2852039166/",
    "metadata-name": "http://metadata.google.internal/computeMetadata/v1/",
    "rfc1918-10": "http://10.0.0.1/",
    "rfc1918-172": "http://172.16.5.4/",
    "rfc1918-192": "http://192.168.1.1/",
    "private-name": "http://internal.example/",
    "cgnat": "http://100.64.0.1/",
    "multicast": "http://224.0.0.1/",
    "reserved": "http://240.0.0.1/",
    "broadcast": "http://255.255.255.255/",
    "test-net-1": "http://192.0.2.1/",
    "test-net-2": "http://198.51.100.7/",
    "test-net-3": "http://203.0.113.9/",
    "benchmark": "http://198.18.0.1/",
    "one-answer-private": "http://mixed.example/",
    "dns-mapped-private": "http://mapped.example/",
    "dns-ipv6-ula": "http://v6.example/",
    "dns-scoped-link-local": "http://scoped.example/",
}

SCHEMES = {
    "file": "file:///etc/passwd",
    "file-host": "file://127.0.0.1/etc/passwd",
    "ftp": "ftp://127.0.0.1:{port}/",
    "gopher": "gopher://127.0.0.1:{port}/_GET%20/",
    "dict": "dict://127.0.0.1:{port}/info",
    "javascript": "javascript:alert(1)",
    "ldap": "ldap://127.0.0.1:{port}/",
    "jar": "jar:http://127.0.0.1:{port}/x.jar!/",
    "ws": "ws://127.0.0.1:{port}/",
}

MALFORMED = {
    "backslash": "http://127.0.0.1:{port}\\@example.com/",
    "single-slash": "http:/127.0.0.1:{port}/",
    "no-slash": "http:127.0.0.1:{port}/",
    "no-scheme": "127.0.0.1:{port}/a.png",
    "scheme-relative": "//127.0.0.1:{port}/",
    "no-host": "http:///a.png",
    "unclosed-ipv6": "http://[::1:{port}/",
    "ipv6-zone": "http://[fe80::1%25eth0]/",
    "five-parts": "http://1.2.3.4.5/",
    "octet-overflow": "http://256.0.0.1/",
    "number-overflow": "http://4294967296/",
    "bad-octal": "http://08.0.0.1/",
    "port-overflow": "http://127.0.0.1:99999/",
    "port-zero": "http://127.0.0.1:0/",
    "port-letters": "http://127.0.0.1:8o/",
    "tab-in-host": "http://127.0.0.\t1:{port}/",
    "newline": "http://127.0.0.1:{port}/\nHost: x",
    "space-in-host": "http://exa mple.com/",
    "empty-label": "http://a..example/",
}


def _fetcher(backend: LoopbackOnly) -> MediaFetcher:
    # Short time-outs: should a URL get through, the test fails fast, not in 30 s.
    return MediaFetcher(
        resolver=FakeResolver(dict(DNS)), network_backend=backend, total_timeout=1.0
    )


async def _refused(url: str, trap: Trap, backend: LoopbackOnly) -> MediaError:
    with pytest.raises(MediaError) as caught:
        await _fetcher(backend).fetch(url.format(port=trap.port), max_bytes=1000, param="p")
    error = caught.value
    assert error.param == "p"
    # The message never shows the address we refused.
    assert not re.search(r"\d+\.\d+\.\d+|::|169\.254|localhost", error.message)
    return error


@pytest.mark.parametrize("url", FORBIDDEN.values(), ids=FORBIDDEN.keys())
async def test_forbidden_address(url: str, trap: Trap, backend: LoopbackOnly) -> None:
    error = await _refused(url, trap, backend)
    assert isinstance(error, MediaForbidden)
    assert error.code == "media_url_forbidden"
    assert "forbidden address" in error.message


@pytest.mark.parametrize("url", SCHEMES.values(), ids=SCHEMES.keys())
async def test_forbidden_scheme(url: str, trap: Trap, backend: LoopbackOnly) -> None:
    error = await _refused(url, trap, backend)
    assert isinstance(error, MediaForbidden)
    assert error.code == "media_url_forbidden"


@pytest.mark.parametrize("url", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_url(url: str, trap: Trap, backend: LoopbackOnly) -> None:
    error = await _refused(url, trap, backend)
    assert error.code == "invalid_media_url"


async def test_allowlisted_name_does_not_open_other_hosts(
    trap: Trap, backend: LoopbackOnly
) -> None:
    resolver = FakeResolver({"localhost": [["127.0.0.1"]], "media.test": [["127.0.0.1"]]})
    fetcher = MediaFetcher(allowed_hosts=["media.test"], resolver=resolver, network_backend=backend)
    for url in ("http://localhost:{port}/", "http://127.0.0.1:{port}/"):
        with pytest.raises(MediaForbidden):
            await fetcher.fetch(url.format(port=trap.port), max_bytes=10, param="p")


async def test_allowlisted_network_does_not_cover_others(trap: Trap, backend: LoopbackOnly) -> None:
    fetcher = MediaFetcher(allowed_hosts=["10.0.0.0/8", "::1"], network_backend=backend)
    with pytest.raises(MediaForbidden):
        await fetcher.fetch(f"http://127.0.0.1:{trap.port}/", max_bytes=10, param="p")
