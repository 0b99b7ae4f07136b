"""Fetching media URLs without letting a client reach our internal network.

Each hop (the URL, then every redirect) is parsed the way a browser would, its host
resolved once, every address checked against `HostPolicy`, and the connection made to a
checked address only: the network backend below httpcore is pinned to those addresses,
so a second DNS answer can never be used (no DNS rebinding). httpcore is used directly,
rather than httpx, so no environment proxy or automatic redirect can bypass the checks.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_to_bytes, urljoin, urlsplit, urlunsplit

import anyio
import httpcore
import httpx

from wanserve.errors import MediaError, MediaForbidden
from wanserve.media.address import HostPolicy, IPAddress, normalize_host
from wanserve.settings import Settings

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are when a path is made ASCII: reserved ones and `%`.
_PATH_SAFE = "/?:@!$&'()*+,;=%~[]"


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, from the system resolver."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def redact_url(url: str) -> str:
    """`url` safe for a log line: no credentials, query or fragment; data: by size only."""
    if url[:5].lower() == "data:":
        return f"data: URL ({len(url)} characters)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


@dataclass(frozen=True)
class _Target:
    """One http(s) request target, its host already normalised."""

    scheme: str
    host: str | IPAddress
    port: int
    path: str
    userinfo: str

    @property
    def connect_host(self) -> str:
        return str(self.host)

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if isinstance(self.host, ipaddress.IPv6Address) else str(self.host)
        return name if self.port == _DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL without credentials, which relative redirects are resolved against."""
        return f"{self.scheme}://{self.host_header}{self.path}"


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses already checked, whatever a resolver would say now."""

    def __init__(
        self, host: str, addresses: Sequence[IPAddress], inner: httpcore.AsyncNetworkBackend
    ):
        self._host = host
        self._addresses = addresses
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if host != self._host:
            raise httpcore.ConnectError("refusing to connect to a host that was not checked")
        error: Exception = httpcore.ConnectError("no address to connect to")
        for address in self._addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class MediaFetcher:
    """Fetches `data:`, `http:` and `https:` media URLs under the SSRF policy and limits."""

    def __init__(
        self,
        *,
        allowed_hosts: Sequence[str] = (),
        connect_timeout: float = 5.0,
        total_timeout: float = 30.0,
        max_redirects: int = 3,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ):
        self._policy = HostPolicy(allowed_hosts)
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_redirects = max_redirects
        self._resolver = resolver or resolve_host
        # Where connections are really opened; tests pass a recorder.
        self._network_backend = network_backend or httpcore.AnyIOBackend()
        self._ssl_context: ssl.SSLContext = httpx.create_ssl_context()

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaFetcher:
        """A fetcher configured from WANSERVE_MEDIA_ALLOWED_HOSTS and the fetch time-outs."""
        return cls(
            allowed_hosts=settings.media_allowed_hosts,
            connect_timeout=settings.fetch_connect_timeout,
            total_timeout=settings.fetch_timeout,
        )

    async def fetch(self, url: str, *, max_bytes: int, param: str) -> bytes:
        """The content at `url`, at most `max_bytes`; errors name `param`."""
        url = url.strip()
        if _split_scheme(url, param)[0] == "data":
            return _decode_data_url(url, max_bytes=max_bytes, param=param)
        logger.info("fetching %s for %s", redact_url(url), param)
        try:
            with anyio.fail_after(self._total_timeout):
                return await self._follow(url, max_bytes=max_bytes, param=param)
        except TimeoutError:
            raise _timeout_error(self._total_timeout, param) from None

    async def _follow(self, url: str, *, max_bytes: int, param: str) -> bytes:
        what = "the media URL"
        for hop in range(self._max_redirects + 1):
            target = _parse_http_url(url, what=what, param=param)
            addresses = await self._checked_addresses(target, url, what=what, param=param)
            result = await self._request(target, addresses, max_bytes=max_bytes, param=param)
            if isinstance(result, bytes):
                return result
            logger.info("%s for %s redirects (hop %d)", redact_url(url), param, hop + 1)
            url, what = result, "a redirect from the media URL"
        raise MediaError(
            f"the media URL redirects more than {self._max_redirects} times",
            code="media_fetch_failed",
            param=param,
        )

    async def _checked_addresses(
        self, target: _Target, url: str, *, what: str, param: str
    ) -> list[IPAddress]:
        if isinstance(target.host, str):
            addresses = await self._resolve(target.host, target.port, what=what, param=param)
            if self._policy.host_allowed(target.host):
                return addresses
        else:
            addresses = [target.host]
        forbidden = self._policy.forbidden_addresses(addresses)
        if forbidden:
            logger.warning(
                "refused %s for %s: it resolves to %s", redact_url(url), param, forbidden[0]
            )
            raise MediaForbidden(f"{what}'s host resolves to a forbidden address", param=param)
        return addresses

    async def _resolve(self, host: str, port: int, *, what: str, param: str) -> list[IPAddress]:
        failed = MediaError(
            f"{what}'s host could not be resolved", code="media_fetch_failed", param=param
        )
        try:
            answers = await self._resolver(host, port)
            # A scope (`fe80::1%eth0`) is dropped: such addresses are refused anyway.
            addresses = [ipaddress.ip_address(answer.split("%")[0]) for answer in answers]
        except (OSError, ValueError):
            raise failed from None
        if not addresses:
            raise failed
        return addresses

    async def check(self, url: str, *, what: str, param: str) -> None:
        """Raise `MediaError` (naming `param`) unless `url` is an http(s) URL we may reach."""
        target = _parse_http_url(url.strip(), what=what, param=param)
        await self._checked_addresses(target, url, what=what, param=param)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, what: str, param: str
    ) -> int:
        """POST `body` to `url` under the same checks and pinning; the answer's status.

        Redirects are not followed (a 3xx is returned like any status); the whole exchange
        is bounded by the total time-out.
        """
        try:
            with anyio.fail_after(self._total_timeout):
                target = _parse_http_url(url.strip(), what=what, param=param)
                addresses = await self._checked_addresses(target, url, what=what, param=param)
                request_headers = [
                    (b"Host", target.host_header.encode("ascii")),
                    (b"User-Agent", b"wanserve-webhooks"),
                    *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
                ]
                async with self._pool(target, addresses, param) as pool:
                    response = await pool.request(
                        "POST",
                        self._url(target),
                        headers=request_headers,
                        content=body,
                        extensions={"timeout": self._timeouts()},
                    )
                    return response.status
        except TimeoutError:
            raise _timeout_error(self._total_timeout, param, "posting to") from None

    def _url(self, target: _Target) -> httpcore.URL:
        return httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.connect_host.encode(),
            port=target.port,
            target=target.path.encode("ascii"),
        )

    def _timeouts(self) -> dict[str, float]:
        return {
            "connect": self._connect_timeout,
            "read": self._total_timeout,
            "write": self._total_timeout,
            "pool": self._total_timeout,
        }

    @asynccontextmanager
    async def _pool(
        self, target: _Target, addresses: list[IPAddress], param: str
    ) -> AsyncIterator[httpcore.AsyncConnectionPool]:
        """A one-connection pool that dials only `addresses`; network failures as `MediaError`."""
        backend = _PinnedBackend(target.connect_host, addresses, self._network_backend)
        try:
            async with httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context, max_connections=1, network_backend=backend
            ) as pool:
                yield pool
        except httpcore.ConnectTimeout:
            raise _timeout_error(self._connect_timeout, param, "connecting to") from None
        except httpcore.TimeoutException:
            raise _timeout_error(self._total_timeout, param) from None
        except (httpcore.NetworkError, httpcore.ProtocolError):
            raise MediaError(
                "could not fetch the media URL: the connection failed",
                code="media_fetch_failed",
                param=param,
            ) from None

    async def _request(
        self, target: _Target, addresses: list[IPAddress], *, max_bytes: int, param: str
    ) -> bytes | str:
        """The body of a 2xx answer, or the absolute URL a redirect points to."""
        async with (
            self._pool(target, addresses, param) as pool,
            pool.stream(
                "GET",
                self._url(target),
                headers=_request_headers(target),
                extensions={"timeout": self._timeouts()},
            ) as response,
        ):
            return await _read_response(response, target, max_bytes=max_bytes, param=param)


async def _read_response(
    response: httpcore.Response, target: _Target, *, max_bytes: int, param: str
) -> bytes | str:
    location = _header(response, b"location")
    if response.status in _REDIRECT_STATUSES and location:
        return urljoin(target.base_url, location.strip())
    if not 200 <= response.status < 300:
        raise MediaError(
            f"the media URL answered HTTP {response.status}",
            code="media_fetch_failed",
            param=param,
        )
    length = _header(response, b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes, param)
    body = bytearray()
    async for chunk in response.aiter_stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes, param)
    return bytes(body)


def _header(response: httpcore.Response, name: bytes) -> str | None:
    for key, value in response.headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _request_headers(target: _Target) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"Host", target.host_header.encode("ascii")),
        (b"User-Agent", b"wanserve-media-fetcher"),
        (b"Accept", b"*/*"),
        # We count and store the bytes as sent: no transparent decompression (and no bomb).
        (b"Accept-Encoding", b"identity"),
    ]
    if target.userinfo:
        user, _, password = target.userinfo.partition(":")
        token = f"{unquote(user)}:{unquote(password)}".encode()
        headers.append((b"Authorization", b"Basic " + base64.b64encode(token)))
    return headers


def _split_scheme(url: str, param: str) -> tuple[str, str]:
    match = _SCHEME.match(url)
    if match is None:
        raise _invalid_url("the media URL has no scheme", param)
    return match.group(1).lower(), url[match.end() :]


def _parse_http_url(url: str, *, what: str, param: str) -> _Target:
    # Browsers read `\` as `/` and drop tabs and newlines; other clients do not. Refusing
    # them keeps every client's reading of the host the same as ours.
    if not url.isprintable() or "\\" in url:
        raise _invalid_url(f"{what} contains characters that are not allowed", param)
    scheme, rest = _split_scheme(url, param)
    if scheme not in _DEFAULT_PORTS:
        raise MediaForbidden(f"{what} must use http, https or data:", param=param)
    if not rest.startswith("//"):
        raise _invalid_url(f"{what} has no host", param)
    rest = rest[2:].split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:end], rest[end:]
    userinfo, _, host_port = authority.rpartition("@")
    try:
        raw_host, port = _split_port(host_port, _DEFAULT_PORTS[scheme])
        host = normalize_host(raw_host)
    except ValueError:
        raise _invalid_url(f"{what} has an invalid host or port", param) from None
    if not path.startswith("/"):
        path = "/" + path
    return _Target(scheme, host, port, quote(path, safe=_PATH_SAFE), userinfo)


def _split_port(host_port: str, default: int) -> tuple[str, int]:
    if host_port.startswith("["):
        close = host_port.find("]")
        if close < 0:
            raise ValueError("unclosed IPv6 literal")
        host, rest = host_port[: close + 1], host_port[close + 1 :]
    else:
        host, colon, port = host_port.partition(":")
        rest = colon + port
    if rest in ("", ":"):
        return host, default
    digits = rest[1:]
    if not (rest.startswith(":") and digits.isascii() and digits.isdigit()):
        raise ValueError("bad port")
    port_number = int(digits)
    if not 0 < port_number < 65536:
        raise ValueError("port out of range")
    return host, port_number


def _decode_data_url(url: str, *, max_bytes: int, param: str) -> bytes:
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise _invalid_url("the data: URL has no comma before its data", param)
    is_base64 = header.strip().lower().replace(" ", "").endswith(";base64")
    # Check the size the payload can decode to before decoding it.
    bound = len(payload) * 3 // 4 if is_base64 else len(payload)
    if bound > max_bytes + 3:
        raise _too_large(max_bytes, param)
    data = unquote_to_bytes(payload)
    if is_base64:
        data = _decode_base64(data, param)
    if len(data) > max_bytes:
        raise _too_large(max_bytes, param)
    return data


def _decode_base64(data: bytes, param: str) -> bytes:
    compact = b"".join(data.split()).rstrip(b"=")
    if len(compact) % 4 == 1:
        raise _invalid_url("the data: URL is not valid base64", param)
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except binascii.Error:
        raise _invalid_url("the data: URL is not valid base64", param) from None


def _invalid_url(message: str, param: str) -> MediaError:
    return MediaError(message, code="invalid_media_url", param=param)


def _too_large(max_bytes: int, param: str) -> MediaError:
    return MediaError(
        f"the media is larger than the limit of {max_bytes} bytes",
        code="media_too_large",
        param=param,
    )


def _timeout_error(seconds: float, param: str, doing: str = "fetching") -> MediaError:
    return MediaError(
        f"{doing} the media URL took longer than {seconds:g} s",
        code="media_fetch_timeout",
        param=param,
    )
