"""MediaFetcher against a real origin on 127.0.0.1: success, redirects, limits, pinning."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import anyio
import pytest
from media_netfakes import FakeResolver, Trap

from netguard import LoopbackOnly
from wanserve.errors import MediaError, MediaForbidden
from wanserve.media.fetch import MediaFetcher, redact_url
from wanserve.settings import Settings

pytestmark = pytest.mark.anyio


def _fetcher(backend: LoopbackOnly, **kwargs: Any) -> MediaFetcher:
    kwargs.setdefault("allowed_hosts", ["127.0.0.1"])
    kwargs.setdefault("total_timeout", 5.0)
    return MediaFetcher(network_backend=backend, **kwargs)


@pytest.mark.parametrize(
    ("allowed", "host", "dns"),
    [
        (["127.0.0.1"], "127.0.0.1", {}),
        (["127.0.0.0/8"], "127.0.0.1", {}),
        ([" 127.0.0.1 ", ""], "127.0.0.1", {}),
        (["media.test"], "media.test", {"media.test": [["127.0.0.1"]]}),
        (["MEDIA.test."], "Media.Test.", {"media.test": [["127.0.0.1"]]}),
        (["127.0.0.1"], "media.test", {"media.test": [["127.0.0.1"]]}),
        (["0x7f.1"], "127.0.0.1", {}),
    ],
    ids=["ip", "cidr", "padded", "name", "name-case-dot", "ip-via-name", "odd-ip-entry"],
)
async def test_allowed_host_is_fetched(
    allowed: list[str],
    host: str,
    dns: dict[str, list[list[str]]],
    origin_port: int,
    backend: LoopbackOnly,
) -> None:
    fetcher = _fetcher(backend, allowed_hosts=allowed, resolver=FakeResolver(dns))
    body = await fetcher.fetch(f"http://{host}:{origin_port}/ok", max_bytes=100, param="p")
    assert body == b"hello media"
    assert backend.addresses == ["127.0.0.1"]


async def test_host_header_and_credentials_are_sent(
    origin_port: int, backend: LoopbackOnly
) -> None:
    resolver = FakeResolver({"media.test": [["127.0.0.1"]]})
    fetcher = _fetcher(backend, resolver=resolver)
    url = f"http://user:p%40ss@media.test:{origin_port}/echo"
    body = await fetcher.fetch(url, max_bytes=100, param="p")
    host, auth = body.decode().split("|")
    assert host == f"media.test:{origin_port}"
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"user:p@ss"


async def test_dns_rebinding_uses_the_checked_address(
    origin_port: int, backend: LoopbackOnly
) -> None:
    # The first answer is checked and allowed; any later answer would be private.
    resolver = FakeResolver({"rebind.test": [["127.0.0.1"], ["10.0.0.1"]]})
    fetcher = _fetcher(backend, resolver=resolver)
    body = await fetcher.fetch(f"http://rebind.test:{origin_port}/echo", max_bytes=100, param="p")
    assert body.decode().startswith(f"rebind.test:{origin_port}|")
    assert resolver.lookups == ["rebind.test"]
    assert backend.addresses == ["127.0.0.1"]


async def test_dns_rebinding_to_loopback_never_lands_there(
    origin: Any, origin_port: int, backend: LoopbackOnly
) -> None:
    # Checked answer: a TEST-NET address the operator allowed; the rebind answer would
    # be our own origin. The connection must go to the TEST-NET address only.
    resolver = FakeResolver({"rebind.test": [["192.0.2.10"], ["127.0.0.1"]]})
    fetcher = _fetcher(backend, allowed_hosts=["192.0.2.0/24"], resolver=resolver)
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(f"http://rebind.test:{origin_port}/ok", max_bytes=100, param="p")
    assert caught.value.code == "media_fetch_failed"
    assert backend.addresses == ["192.0.2.10"]
    assert resolver.lookups == ["rebind.test"]
    assert origin.seen == []


async def test_every_answer_is_checked(origin: Any, origin_port: int) -> None:
    backend = LoopbackOnly()
    resolver = FakeResolver({"two.test": [["127.0.0.1", "10.9.9.9"]]})
    fetcher = _fetcher(backend, resolver=resolver)
    with pytest.raises(MediaForbidden):
        await fetcher.fetch(f"http://two.test:{origin_port}/ok", max_bytes=100, param="p")
    assert backend.addresses == []


@pytest.mark.parametrize(
    ("path", "max_redirects", "expected"),
    [
        # /redirect/N answers with N + 1 redirects before /ok.
        ("/redirect/0", 3, b"hello media"),
        ("/redirect/2", 3, b"hello media"),
        ("/redirect/1", 2, b"hello media"),
        ("/redirect/2", 2, "media_fetch_failed"),
        ("/redirect/3", 3, "media_fetch_failed"),
        ("/redirect/0", 0, "media_fetch_failed"),
        ("/redirect/9", 3, "media_fetch_failed"),
    ],
)
async def test_redirect_chains(
    path: str, max_redirects: int, expected: bytes | str, origin_port: int
) -> None:
    fetcher = _fetcher(LoopbackOnly(), max_redirects=max_redirects)
    url = f"http://127.0.0.1:{origin_port}{path}"
    if isinstance(expected, bytes):
        assert await fetcher.fetch(url, max_bytes=100, param="p") == expected
        return
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(url, max_bytes=100, param="p")
    assert caught.value.code == expected
    assert "redirects more than" in caught.value.message


async def test_redirect_to_allowed_name(origin_port: int, backend: LoopbackOnly) -> None:
    resolver = FakeResolver({"media.test": [["127.0.0.1"]]})
    fetcher = _fetcher(backend, allowed_hosts=["media.test"], resolver=resolver)
    target = f"http://media.test:{origin_port}/redirect/1"
    url = f"http://media.test:{origin_port}/to?url={target}"
    assert await fetcher.fetch(url, max_bytes=100, param="p") == b"hello media"


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("http://127.0.0.1:{trap}/", MediaForbidden),
        ("http://localhost:{trap}/", MediaForbidden),
        ("http://2130706433:{trap}/", MediaForbidden),
        ("http://[::ffff:127.0.0.1]:{trap}/", MediaForbidden),
        ("http://169.254.169.254/latest/meta-data/", MediaForbidden),
        ("file:///etc/passwd", MediaForbidden),
        ("gopher://127.0.0.1:{trap}/_x", MediaForbidden),
        ("data:,hello", MediaForbidden),
        ("http://127.0.0.1:{trap}\\@media.test/", MediaError),
    ],
)
async def test_redirect_to_forbidden_target(
    location: str, error: type[MediaError], origin_port: int, trap: Trap
) -> None:
    # The origin is allowed by name only, so its own address (and the trap's) is not.
    backend = LoopbackOnly()
    resolver = FakeResolver({"media.test": [["127.0.0.1"]], "localhost": [["127.0.0.1"]]})
    fetcher = _fetcher(backend, allowed_hosts=["media.test"], resolver=resolver)
    target = location.format(trap=trap.port).replace("\\", "%5C")
    url = f"http://media.test:{origin_port}/to?url={target}"
    with pytest.raises(error) as caught:
        await fetcher.fetch(url, max_bytes=100, param="media[0].url")
    assert caught.value.param == "media[0].url"
    assert "127.0.0.1" not in caught.value.message
    assert backend.addresses == ["127.0.0.1"]  # the origin, once
    assert not trap.connected()


@pytest.mark.parametrize(
    ("path", "max_bytes", "outcome"),
    [
        ("/big", 1000, 1000),
        ("/big", 999, "media_too_large"),  # refused from Content-Length
        ("/stream-big", 1000, 1000),
        ("/stream-big", 999, "media_too_large"),  # refused while streaming
        ("/status/404", 100, "media_fetch_failed"),
        ("/status/500", 100, "media_fetch_failed"),
        ("/status/204", 100, 0),
        ("/status/304", 100, "media_fetch_failed"),
    ],
)
async def test_body_limits_and_status(
    path: str, max_bytes: int, outcome: int | str, origin_port: int
) -> None:
    fetcher = _fetcher(LoopbackOnly())
    url = f"http://127.0.0.1:{origin_port}{path}"
    if isinstance(outcome, int):
        assert len(await fetcher.fetch(url, max_bytes=max_bytes, param="p")) == outcome
        return
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(url, max_bytes=max_bytes, param="p")
    assert caught.value.code == outcome
    if path.startswith("/status"):
        assert path.rsplit("/", 1)[1] in caught.value.message


async def test_trickling_server_hits_the_total_deadline(origin_port: int) -> None:
    fetcher = _fetcher(LoopbackOnly(), total_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(f"http://127.0.0.1:{origin_port}/trickle", max_bytes=10**7, param="p")
    assert caught.value.code == "media_fetch_timeout"
    assert time.monotonic() - started < 2.0


async def test_slow_dns_hits_the_total_deadline(backend: LoopbackOnly) -> None:
    async def hanging(host: str, port: int) -> list[str]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    fetcher = MediaFetcher(resolver=hanging, total_timeout=0.2, network_backend=backend)
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch("http://slow.test/a.png", max_bytes=10, param="p")
    assert caught.value.code == "media_fetch_timeout"


@pytest.mark.parametrize("answers", [[], ["not-an-ip"]], ids=["empty", "garbage"])
async def test_unresolvable_host(answers: list[str], backend: LoopbackOnly) -> None:
    fetcher = MediaFetcher(resolver=FakeResolver({"x.test": [answers]}), network_backend=backend)
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch("http://x.test/", max_bytes=10, param="p")
    assert caught.value.code == "media_fetch_failed"


async def test_closed_port_is_a_fetch_failure(trap: Trap, backend: LoopbackOnly) -> None:
    port = trap.port
    trap.sock.close()  # nothing listens there any more
    fetcher = _fetcher(backend)
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(f"http://127.0.0.1:{port}/", max_bytes=10, param="p")
    assert caught.value.code == "media_fetch_failed"


PAYLOAD = b"\x89PNG\r\n\x1a\n binary \x00\xff"
B64 = base64.b64encode(PAYLOAD).decode()


@pytest.mark.parametrize(
    ("url", "max_bytes", "outcome"),
    [
        (f"data:image/png;base64,{B64}", 100, PAYLOAD),
        (f"DATA:image/png;BASE64,{B64}", 100, PAYLOAD),
        (f"data:image/png;name=a.png;base64,{B64.rstrip('=')}", 100, PAYLOAD),
        (f"data:;base64,{B64[:8]}%0A{B64[8:]}", 100, PAYLOAD),
        (f"  data:image/png;base64,{B64}  ", 100, PAYLOAD),
        ("data:,hello%20world", 100, b"hello world"),
        ("data:text/plain,%00%ff", 100, b"\x00\xff"),
        ("data:,", 100, b""),
        (f"data:image/png;base64,{B64}", len(PAYLOAD), PAYLOAD),
        (f"data:image/png;base64,{B64}", len(PAYLOAD) - 1, "media_too_large"),
        ("data:;base64," + "A" * 4000, 100, "media_too_large"),
        ("data:,hello%20world", 10, "media_too_large"),
        ("data:image/png;base64,!!!!", 100, "invalid_media_url"),
        ("data:image/png;base64,A", 100, "invalid_media_url"),
        ("data:image/png;base64", 100, "invalid_media_url"),
    ],
)
async def test_data_urls(url: str, max_bytes: int, outcome: bytes | str) -> None:
    fetcher = MediaFetcher(network_backend=LoopbackOnly())
    if isinstance(outcome, bytes):
        assert await fetcher.fetch(url, max_bytes=max_bytes, param="p") == outcome
        return
    with pytest.raises(MediaError) as caught:
        await fetcher.fetch(url, max_bytes=max_bytes, param="p")
    assert (caught.value.code, caught.value.param) == (outcome, "p")


async def test_credentials_never_logged(
    origin_port: int, backend: LoopbackOnly, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wanserve.media")
    fetcher = _fetcher(backend, allowed_hosts=[])
    for path in ("/redirect/1", "/ok"):
        url = f"http://alice:hunter2@127.0.0.1:{origin_port}{path}?token=s3cret"
        with pytest.raises(MediaForbidden):
            await fetcher.fetch(url, max_bytes=100, param="p")
    fetcher = _fetcher(backend)
    url = f"http://alice:hunter2@127.0.0.1:{origin_port}/redirect/1?token=s3cret"
    await fetcher.fetch(url, max_bytes=100, param="p")
    assert "127.0.0.1" in caplog.text
    assert "hunter2" not in caplog.text
    assert "alice" not in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("http://u:p@host.test:81/a/b?sig=1#x", "http://host.test:81/a/b"),
        ("https://host.test/a", "https://host.test/a"),
        ("data:image/png;base64,AAAA", "data: URL (26 characters)"),
        ("http://[::1/", "<unparseable URL>"),
    ],
)
def test_redact_url(url: str, logged: str) -> None:
    assert redact_url(url) == logged


def test_from_settings() -> None:
    settings = Settings(
        media_allowed_hosts="media.test, 10.0.0.0/8",  # type: ignore[arg-type]
        fetch_connect_timeout=1.5,
        fetch_timeout=7,
    )
    fetcher = MediaFetcher.from_settings(settings)
    assert fetcher._policy.host_allowed("media.test")
    assert (fetcher._connect_timeout, fetcher._total_timeout) == (1.5, 7)


async def test_allowed_ipv6_literal_is_dialled_as_is(backend: LoopbackOnly) -> None:
    fetcher = _fetcher(backend, allowed_hosts=["::1"])
    with pytest.raises(MediaError) as caught:  # the test backend only reaches 127.0.0.1
        await fetcher.fetch("http://[::1]:9/ok", max_bytes=100, param="p")
    assert caught.value.code == "media_fetch_failed"
    assert backend.addresses == ["::1"]
