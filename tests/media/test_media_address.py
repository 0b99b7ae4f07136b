"""The address policy on its own: host normalisation, forbidden ranges, allow-list entries."""

from __future__ import annotations

import ipaddress

import pytest

from wanserve.media.address import HostPolicy, is_forbidden, normalize_host


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.com.", "example.com"),
        ("b\u00fccher.de", "xn--bcher-kva.de"),
        ("_svc.example", "_svc.example"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.65535", "10.1.255.255"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),
        ("1.2.3.4.", "1.2.3.4"),
        ("%31.2.3.4", "1.2.3.4"),
        ("\uff11.2.3.4", "1.2.3.4"),
        ("[::ffff:1.2.3.4]", "::ffff:102:304"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("a.1x", "a.1x"),
    ],
)
def test_normalize_host(raw: str, expected: str) -> None:
    assert str(normalize_host(raw)) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "a..b",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.2.3.0x100",
        "4294967296",
        "09",
        "a.0x1g.1",
        "exa mple.com",
        "a%2fb",
        "%ff",
        "[::1",
        "[fe80::1%eth0]",
        "[1.2.3.4]",
        "-bad-.com",
        "a" * 64 + ".com",
        ".".join(["a" * 60] * 5),
    ],
)
def test_normalize_host_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(raw)


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("8.8.8.8", False),
        ("93.184.216.34", False),
        ("2606:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("2002:808:808::1", False),
        ("127.0.0.1", True),
        ("10.255.255.255", True),
        ("172.31.0.1", True),
        ("172.32.0.1", False),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("100.127.255.255", True),
        ("100.128.0.1", False),
        ("224.0.0.251", True),
        ("239.255.255.250", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("0.0.0.0", True),
        ("0.1.2.3", True),
        ("192.0.0.8", True),
        ("192.0.2.1", True),
        ("198.18.0.1", True),
        ("198.51.100.1", True),
        ("203.0.113.1", True),
        ("192.88.99.1", True),
        ("::", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:169.254.169.254", True),
        ("::127.0.0.1", True),
        ("::10.0.0.1", True),
        ("64:ff9b::a00:1", True),
        ("64:ff9b:1::1", True),
        ("2002:a00:1::", True),
        ("2002:c0a8::1", True),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),
        ("2001:db8::1", True),
        ("3fff::1", True),
        ("fc00::1", True),
        ("fdff:ffff::1", True),
        ("fe80::1", True),
        ("febf::1", True),
        ("fec0::1", True),
        ("ff02::1", True),
        ("ff0e::1", True),
        ("100::1", True),
    ],
)
def test_is_forbidden(address: str, forbidden: bool) -> None:
    assert is_forbidden(ipaddress.ip_address(address)) is forbidden


def test_policy_names_and_networks() -> None:
    policy = HostPolicy(["Media.Example.", "10.0.0.0/8", "[fd00::1]", "0x7f.1", " "])
    assert policy.host_allowed("media.example")
    assert not policy.host_allowed("other.example")
    assert not policy.host_allowed(ipaddress.ip_address("10.0.0.1"))
    addresses = [ipaddress.ip_address(a) for a in ("10.2.3.4", "fd00::1", "127.0.0.1", "127.0.0.2")]
    assert policy.forbidden_addresses(addresses) == [ipaddress.ip_address("127.0.0.2")]


def test_policy_refuses_bad_entries() -> None:
    with pytest.raises(ValueError):
        HostPolicy(["exa mple.com"])
