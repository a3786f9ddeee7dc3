"""SSRF guard: which IP addresses webhook deliveries may reach, and which endpoint URLs are acceptable.

The address check runs at delivery time on every address the host resolves to (see
`transport.py`, which then connects to exactly the address it checked) and at creation time
when the URL's host is an IP literal.

What is refused is one table, `SPECIAL_PURPOSE`, written from the IANA IPv4 and IPv6
Special-Purpose Address Registries (RFC 6890), the IPv4 multicast block, the IPv6 address space
outside global unicast (2000::/3, RFC 4291 §2.4: multicast, link-local, deprecated site-local and
the blocks the IETF reserves) and the cloud metadata addresses. A webhook receiver is a public
unicast host, so every special-purpose block is refused, even those the registry marks "globally
reachable" (anycast relays, AS112, AMT, PCP, TURN): none of them runs a tenant's HTTPS endpoint.
Two IPv6 forms carry the IPv4 address a packet really goes to (IPv4-mapped, the NAT64 well-known
prefix): those are judged by that IPv4 address. 6to4 and Teredo are refused outright.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Literal, NamedTuple
from urllib.parse import urlsplit

from mailroom_contracts.rpc import WEBHOOK_URL_MAX_LENGTH

from mailroom_webhooks.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = WEBHOOK_URL_MAX_LENGTH


class SpecialRange(NamedTuple):
    """One row of the table: a block, its registry name, the RFC that defines it, and why a webhook
    delivery must not go there. `action` is `refuse`, or `ipv4` for a form judged by the IPv4
    address in its low 32 bits."""

    network: Network
    name: str
    rfc: str
    reason: str
    action: Literal["refuse", "ipv4"] = "refuse"


def _row(cidr: str, name: str, rfc: str, reason: str, action: Literal["refuse", "ipv4"] = "refuse") -> SpecialRange:
    return SpecialRange(ipaddress.ip_network(cidr), name, rfc, reason, action)


_LOCAL = "not a public host: reaching it from the delivery worker is SSRF"
_DOC = "documentation/example addresses: never a real receiver"
_INFRA = "protocol infrastructure (anycast, relay, service), not a tenant's HTTP server"
_RESERVED = "reserved: not assigned to any host"

SPECIAL_PURPOSE: tuple[SpecialRange, ...] = (
    # --- IANA IPv4 Special-Purpose Address Registry
    _row("0.0.0.0/8", '"This network"', "RFC 791 §3.2", "unspecified: a connection to it reaches this host"),
    _row("0.0.0.0/32", '"This host on this network"', "RFC 1122 §3.2.1.3", "unspecified: reaches this host"),
    _row("10.0.0.0/8", "Private-Use", "RFC 1918", _LOCAL),
    _row("100.64.0.0/10", "Shared Address Space (CGNAT)", "RFC 6598", _LOCAL),
    _row("127.0.0.0/8", "Loopback", "RFC 1122 §3.2.1.3", _LOCAL),
    _row("169.254.0.0/16", "Link Local", "RFC 3927", _LOCAL),
    _row("172.16.0.0/12", "Private-Use", "RFC 1918", _LOCAL),
    _row("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890 §2.1", _INFRA),
    _row("192.0.0.0/29", "IPv4 Service Continuity Prefix (DS-Lite)", "RFC 7335", _LOCAL),
    _row("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", _RESERVED),
    _row("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", _INFRA),
    _row("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", _INFRA),
    _row("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", _INFRA),
    _row("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880, RFC 7050 §2.2", _INFRA),
    _row("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", _DOC),
    _row("192.31.196.0/24", "AS112-v4", "RFC 7535", _INFRA),
    _row("192.52.193.0/24", "AMT", "RFC 7450", _INFRA),
    _row("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", _INFRA),
    _row("192.168.0.0/16", "Private-Use", "RFC 1918", _LOCAL),
    _row("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", _INFRA),
    _row("198.18.0.0/15", "Benchmarking", "RFC 2544", _LOCAL),
    _row("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", _DOC),
    _row("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", _DOC),
    _row("240.0.0.0/4", "Reserved", "RFC 1112 §4", _RESERVED),
    _row("255.255.255.255/32", "Limited Broadcast", "RFC 8190, RFC 919 §7", "broadcast: not one host"),
    # --- IPv4 multicast (IANA IPv4 Multicast Address Space Registry)
    _row("224.0.0.0/4", "Multicast", "RFC 5771", "multicast: not one host"),
    # --- IANA IPv6 Special-Purpose Address Registry
    _row("::1/128", "Loopback Address", "RFC 4291 §2.5.3", _LOCAL),
    _row("::/128", "Unspecified Address", "RFC 4291 §2.5.2", "unspecified: a connection to it reaches this host"),
    _row("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291 §2.5.5.2", "judged by the IPv4 address it carries", "ipv4"),
    _row("64:ff9b::/96", "IPv4-IPv6 Translat. (NAT64)", "RFC 6052", "judged by the IPv4 address it carries", "ipv4"),
    _row("64:ff9b:1::/48", "Local-use IPv4/IPv6 Translation", "RFC 8215", "local NAT64: reaches private IPv4"),
    _row("100::/64", "Discard-Only Address Block", "RFC 6666", _RESERVED),
    _row("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780", _RESERVED),
    _row("2001::/23", "IETF Protocol Assignments", "RFC 2928", _INFRA),
    _row("2001::/32", "TEREDO", "RFC 4380, RFC 8190", "tunnel: the IPv4 host behind it is not checked"),
    _row("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", _INFRA),
    _row("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", _INFRA),
    _row("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", _INFRA),
    _row("2001:2::/48", "Benchmarking", "RFC 5180", _LOCAL),
    _row("2001:3::/32", "AMT", "RFC 7450", _INFRA),
    _row("2001:4:112::/48", "AS112-v6", "RFC 7535", _INFRA),
    _row("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843", _RESERVED),
    _row("2001:20::/28", "ORCHIDv2", "RFC 7343", "identifiers, not routable locators"),
    _row("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs)", "RFC 9374", "identifiers, not locators"),
    _row("2001:db8::/32", "Documentation", "RFC 3849", _DOC),
    _row("2002::/16", "6to4", "RFC 3056", "tunnel: the IPv4 host behind it is not checked"),
    _row("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", _INFRA),
    _row("3fff::/20", "Documentation", "RFC 9637", _DOC),
    _row("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", "SRv6 segment identifiers, not hosts"),
    _row("fc00::/7", "Unique-Local", "RFC 4193, RFC 8190", _LOCAL),
    _row("fe80::/10", "Link-Local Unicast", "RFC 4291 §2.5.6", _LOCAL),
    # --- the rest of the IPv6 address space that is not global unicast (IANA IPv6 Address Space)
    _row("fec0::/10", "Site-Local (deprecated)", "RFC 3879, RFC 4291 §2.5.7", _LOCAL),
    _row("ff00::/8", "Multicast", "RFC 4291 §2.7", "multicast: not one host"),
    _row("::/3", "Reserved by IETF (incl. IPv4-compatible ::/96)", "RFC 4291 §2.4, §2.5.5.1", _RESERVED),
    _row("4000::/2", "Reserved by IETF", "RFC 4291 §2.4", _RESERVED),
    _row("8000::/1", "Reserved by IETF, ULA, link-local, multicast", "RFC 4291 §2.4", _RESERVED),
)

# Instance-metadata services: refused even when a wider allow-listed range covers them.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::253",
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
    )
)

# Most specific first, so `special_range` names the narrowest block an address is in.
_BY_SPECIFICITY = sorted(SPECIAL_PURPOSE, key=lambda r: r.network.prefixlen, reverse=True)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def special_range(ip: IPAddress) -> SpecialRange | None:
    """The narrowest row of `SPECIAL_PURPOSE` that holds `ip`, or None for a public unicast address."""
    for row in _BY_SPECIFICITY:
        if ip.version == row.network.version and ip in row.network:
            return row
    return None


class AddressPolicy:
    """Public unicast addresses are allowed; everything else only inside the operator's allow-list."""

    def __init__(self, allowed: Iterable[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def is_allowed(self, address: IPAddress | str) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            # fe80::1%eth0 compares unequal to fe80::1: judge the address, not the zone.
            ip = ipaddress.IPv6Address(int(ip))
        ip = _embedded_ipv4(ip)
        if ip in METADATA_ADDRESSES:
            return any(net.num_addresses == 1 and ip in net for net in self.allowed)
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return True
        return special_range(ip) is None


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """Judge an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::a.b.c.d) address by its IPv4 part."""
    if isinstance(ip, ipaddress.IPv6Address):
        row = special_range(ip)
        if row is not None and row.action == "ipv4":
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def validate_endpoint_url(url: str, *, allow_http: bool, policy: AddressPolicy) -> str:
    """Return the URL if tenants may register it; raise ValidationError(param="url") otherwise."""

    def bad(message: str) -> ValidationError:
        return ValidationError(message, param="url")

    if not isinstance(url, str) or not url:
        raise bad("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise bad(f"url must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise bad("url must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise bad("url is not a valid absolute URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise bad("url must be an absolute https:// URL")
    if scheme == "http" and not allow_http:
        raise bad("url must use https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise bad("url must not contain credentials")
    host = parts.hostname
    if not host:
        raise bad("url must name a host")
    if port == 0:
        raise bad("url has an invalid port")
    literal = _ip_literal(host)
    if literal is not None:
        if not policy.is_allowed(literal):
            raise bad("url points to an address that webhooks may not reach (private, loopback, ...)")
        return url
    if not _is_hostname(host):
        raise bad("url has an invalid host name")
    return url


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _is_hostname(host: str) -> bool:
    try:
        ascii_host = host.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        return False
    if not ascii_host or len(ascii_host) > 253:
        return False
    labels = ascii_host.split(".")
    # A numeric last label is no TLD; it is how "2130706433" or "127.1" spell an IP address.
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return False
    return all(_LABEL.match(label) for label in labels)
