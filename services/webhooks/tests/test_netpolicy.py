"""The SSRF table (`netpolicy.SPECIAL_PURPOSE`, from the IANA IPv4 and IPv6 Special-Purpose Address
Registries): one test per range that an address inside is refused, that allow-listing the range
opens it, and that the nearest public neighbour outside it is allowed; plus the forms judged by
their embedded IPv4 address, the stdlib's own lists as a cross-check, and URL literals."""

from __future__ import annotations

import ipaddress

import pytest
from mailroom_webhooks.errors import ValidationError
from mailroom_webhooks.netpolicy import (
    METADATA_ADDRESSES,
    SPECIAL_PURPOSE,
    AddressPolicy,
    IPAddress,
    SpecialRange,
    special_range,
    validate_endpoint_url,
)

REFUSED = [row for row in SPECIAL_PURPOSE if row.action == "refuse"]


def inside(row: SpecialRange) -> IPAddress:
    """An address in the row that no narrower row or metadata entry claims."""
    net = row.network
    for candidate in (net[1] if net.num_addresses > 2 else net[0], net[-2] if net.num_addresses > 2 else net[-1]):
        if special_range(candidate) == row and candidate not in METADATA_ADDRESSES:
            return candidate
    step = max(net.num_addresses // 1024, 1)
    for offset in range(0, net.num_addresses, step):
        candidate = net[offset]
        if special_range(candidate) == row and candidate not in METADATA_ADDRESSES:
            return candidate
    raise AssertionError(f"{net} has no address of its own")


def public_neighbour(row: SpecialRange) -> IPAddress:
    """The nearest address outside the row (stepping over every special block it runs into)."""
    top = (1 << row.network.max_prefixlen) - 1
    make = ipaddress.IPv4Address if row.network.version == 4 else ipaddress.IPv6Address
    for direction in (1, -1):
        value = int(row.network.broadcast_address) + 1 if direction == 1 else int(row.network.network_address) - 1
        while 0 <= value <= top:
            blocker = special_range(make(value))
            if blocker is None:
                return make(value)
            # Jump past the widest block holding this address.
            widest = max(
                (r for r in SPECIAL_PURPOSE if r.network.version == row.network.version and make(value) in r.network),
                key=lambda r: r.network.num_addresses,
            )
            value = (
                int(widest.network.broadcast_address) + 1 if direction == 1 else int(widest.network.network_address) - 1
            )
    raise AssertionError(f"no public address next to {row.network}")


@pytest.mark.parametrize("row", REFUSED, ids=[str(r.network) for r in REFUSED])
def test_every_special_range_is_refused_unless_allow_listed(row: SpecialRange) -> None:
    address = inside(row)
    assert not AddressPolicy().is_allowed(address), f"{address} ({row.name}, {row.rfc})"
    assert AddressPolicy([row.network]).is_allowed(address), "the operator's allow-list opens it"
    neighbour = public_neighbour(row)
    assert neighbour not in row.network and AddressPolicy().is_allowed(neighbour), str(neighbour)


def test_the_table_cites_a_source_and_a_reason_for_every_row() -> None:
    networks = [row.network for row in SPECIAL_PURPOSE]
    assert len(networks) == len(set(networks)), "one row per block"
    for row in SPECIAL_PURPOSE:
        assert row.rfc.startswith("RFC ") and row.name and row.reason, row
        assert row.network.network_address == row.network[0]  # strict CIDR


@pytest.mark.parametrize(
    "cidr",
    [
        "fec0::/10",
        "3fff::/20",
        "2620:4f:8000::/48",
        "192.0.0.8/32",
        "192.0.0.9/32",
        "192.0.0.10/32",
        "192.31.196.0/24",
        "192.52.193.0/24",
        "192.88.99.0/24",
        "192.175.48.0/24",
    ],
)
def test_issue_14_ranges_are_in_the_table(cidr: str) -> None:
    """Regression (issue 14 defect 7): an address in each of these was allowed before (the policy
    leaned on the stdlib's lists, which miss them)."""
    net = ipaddress.ip_network(cidr)
    assert net in {row.network for row in SPECIAL_PURPOSE}
    assert not AddressPolicy().is_allowed(net[1] if net.num_addresses > 2 else net[0])


def test_the_table_covers_every_block_the_stdlib_calls_non_global() -> None:
    lists = [
        ipaddress._IPv4Constants._private_networks,  # type: ignore[attr-defined]
        ipaddress._IPv6Constants._private_networks,  # type: ignore[attr-defined]
        ipaddress._IPv6Constants._reserved_networks,  # type: ignore[attr-defined]
        [ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"), ipaddress.ip_network("fec0::/10")],
    ]
    policy = AddressPolicy()
    for networks in lists:
        for net in networks:
            for address in (net[0], net[-1]):
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    continue  # judged by the IPv4 part, below
                assert not policy.is_allowed(address), f"{address} in {net}"


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("::ffff:8.8.8.8", True),
        ("::ffff:10.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::ffff:192.0.0.9", False),
        ("64:ff9b::8.8.8.8", True),
        ("64:ff9b::10.0.0.1", False),
        ("64:ff9b::127.0.0.1", False),
        ("64:ff9b::169.254.169.254", False),
        ("64:ff9b:1::8.8.8.8", False),  # local-use NAT64: refused whatever it carries
        ("2002:808:808::1", False),  # 6to4 of 8.8.8.8: refused outright
        ("2002:7f00:1::1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
        ("::8.8.8.8", False),  # deprecated IPv4-compatible
        ("::ffff:0:808:808", False),  # IPv4-translated (SIIT), in reserved ::/3
        ("fe80::1%eth0", False),
        ("fd00:ec2::254%2", False),
        ("2606:4700:4700::1111", True),
        ("2a00:1450:4001:80b::200e", True),
        ("1.1.1.1", True),
    ],
)
def test_forms_that_carry_or_hide_an_address(address: str, allowed: bool) -> None:
    assert AddressPolicy().is_allowed(address) is allowed


def test_allow_list_of_the_ipv4_opens_its_mapped_and_nat64_forms_but_never_metadata() -> None:
    policy = AddressPolicy([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])
    assert policy.is_allowed("::ffff:10.1.2.3") and policy.is_allowed("64:ff9b::10.1.2.3")
    assert not policy.is_allowed("::ffff:192.168.1.1")
    assert not policy.is_allowed("fd00:ec2::254") and not policy.is_allowed("fd00:ec2::254%3")
    assert policy.is_allowed("fd00::1")


@pytest.mark.parametrize(
    "host", ["[fec0::1]", "[3fff::1]", "[5f00::1]", "192.31.196.1", "192.52.193.1", "192.175.48.1", "[64:ff9b:1::1]"]
)
def test_url_literals_in_the_new_ranges_are_refused_at_creation(host: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate_endpoint_url(f"https://{host}/hook", allow_http=False, policy=AddressPolicy())
    assert refused.value.param == "url"
