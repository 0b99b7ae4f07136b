"""Which hosts and addresses a media URL may reach (the SSRF policy).

Host names are normalised the way a browser (WHATWG URL) reads them, so that `2130706433`,
`0177.0.0.1`, `0x7f.1`, `127.1` and full-width digits are all seen as 127.0.0.1 before any
check; every address a name resolves to is then judged, IPv6 forms that carry an IPv4
address by the address they carry.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import unquote

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Listed explicitly so the policy does not drift with the Python patch version's idea of
# `is_global`; anything Python itself calls non-global is refused as well.
_FORBIDDEN_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata endpoints
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, includes broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, includes Teredo
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local
        "ff00::/8",  # multicast
    )
)
_IPV4_COMPAT = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_FORBIDDEN_HOST_CHARS = frozenset(" #%/:<>?@[\\]^|\"'`{}")
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


def is_forbidden(ip: IPAddress) -> bool:
    """True if connecting to `ip` could reach something internal to our network."""
    if isinstance(ip, ipaddress.IPv6Address):
        carried = _translated_ipv4(ip)
        if carried is not None:
            # Mapped, compatible and NAT64 forms are only carriers: the IPv4 decides.
            return _forbidden_plain(carried)
        tunnel_ends = _tunnel_ipv4s(ip)
        if any(_forbidden_plain(end) for end in tunnel_ends):
            return True
    return _forbidden_plain(ip)


def _forbidden_plain(ip: IPAddress) -> bool:
    if any(ip in net for net in _FORBIDDEN_NETWORKS if net.version == ip.version):
        return True
    return not ip.is_global or ip.is_multicast or ip.is_reserved


def _translated_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip in _IPV4_COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _tunnel_ipv4s(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    ends = [ip.sixtofour] if ip.sixtofour is not None else []
    if ip.teredo is not None:
        ends.extend(ip.teredo)
    return ends


def normalize_host(raw: str) -> str | IPAddress:
    """The host of a URL as a client connects to it: an address, or a lower-case ASCII name.

    Raises ValueError if no client would accept the host.
    """
    if raw.startswith("["):
        return _parse_ipv6_literal(raw)
    host = unquote(raw, errors="strict")
    if not host or _FORBIDDEN_HOST_CHARS.intersection(host) or not host.isprintable():
        raise ValueError("bad characters in host")
    try:
        host = idna.uts46_remap(host, std3_rules=False, transitional=False).lower()
    except idna.IDNAError as exc:
        raise ValueError("bad international host name") from exc
    if _ends_in_number(host):
        return _parse_ipv4_whatwg(host)
    return _to_ascii_name(host)


def _parse_ipv6_literal(raw: str) -> ipaddress.IPv6Address:
    if not raw.endswith("]") or "%" in raw:
        raise ValueError("bad IPv6 literal")
    return ipaddress.IPv6Address(raw[1:-1])


def _to_ascii_name(host: str) -> str:
    labels = host.removesuffix(".").split(".")
    ascii_labels = [label if label.isascii() else _idna_label(label) for label in labels]
    if not all(_LABEL.match(label) for label in ascii_labels):
        raise ValueError("bad host name")
    name = ".".join(ascii_labels)
    if len(name) > 253:
        raise ValueError("host name too long")
    return name


def _idna_label(label: str) -> str:
    try:
        return idna.encode(label, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError("bad international host name") from exc


def _ipv4_parts(host: str) -> list[str]:
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    return parts


def _ends_in_number(host: str) -> bool:
    last = _ipv4_parts(host)[-1]
    if last.isascii() and last.isdigit():
        return True
    return _ipv4_number(last) is not None


def _ipv4_number(part: str) -> int | None:
    """One dotted part as WHATWG reads it: 0x.. hexadecimal, 0.. octal, else decimal."""
    if not part or not part.isascii():
        return None
    if part[:2].lower() == "0x":
        digits, base = part[2:], 16
    elif len(part) > 1 and part[0] == "0":
        digits, base = part[1:], 8
    else:
        digits, base = part, 10
    if digits == "":
        return 0
    try:
        return int(digits, base) if digits.isalnum() else None
    except ValueError:
        return None


def _parse_ipv4_whatwg(host: str) -> ipaddress.IPv4Address:
    parts = _ipv4_parts(host)
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise ValueError("bad IPv4 address")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise ValueError("IPv4 address out of range")
    address = values[-1]
    for index, value in enumerate(values[:-1]):
        address += value << (8 * (3 - index))
    return ipaddress.IPv4Address(address)


class HostPolicy:
    """The SSRF policy plus the operator's exceptions (WANSERVE_MEDIA_ALLOWED_HOSTS)."""

    def __init__(self, allowed_hosts: Iterable[str] = ()):
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (item.strip() for item in allowed_hosts):
            if not entry:
                continue
            network = _as_network(entry)
            if network is None:
                host = normalize_host(entry)
                if isinstance(host, str):
                    names.add(host)
                    continue
                network = ipaddress.ip_network(host)
            networks.append(network)
        self._names = frozenset(names)
        self._networks = tuple(networks)

    def host_allowed(self, host: str | IPAddress) -> bool:
        """True if the URL's host is listed by name, which exempts it from the checks."""
        return isinstance(host, str) and host in self._names

    def forbidden_addresses(self, addresses: Sequence[IPAddress]) -> list[IPAddress]:
        """The addresses we must not connect to: forbidden and in no allowed network."""
        return [
            ip
            for ip in addresses
            if is_forbidden(ip)
            and not any(ip in net for net in self._networks if net.version == ip.version)
        ]


def _as_network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.removeprefix("[").removesuffix("]"), strict=False)
    except ValueError:
        return None
