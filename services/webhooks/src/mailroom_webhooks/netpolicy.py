"""SSRF guard: which IP addresses webhook deliveries may reach, and which endpoint URLs are acceptable.

The address check runs at delivery time on every address the host resolves to (see
`transport.py`, which then connects to exactly the address it checked) and at creation time
when the URL's host is an IP literal.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from mailroom_webhooks.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048

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
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AddressPolicy:
    """Public unicast addresses are allowed; everything else only inside the operator's allow-list."""

    def __init__(self, allowed: Iterable[Network] = ()) -> None:
        self.allowed = tuple(allowed)

    def is_allowed(self, address: IPAddress | str) -> bool:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        ip = _embedded_ipv4(ip)
        if ip in METADATA_ADDRESSES:
            return any(net.num_addresses == 1 and ip in net for net in self.allowed)
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return True
        return _is_public(ip)


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """Judge an IPv4-mapped (::ffff:a.b.c.d) or NAT64 (64:ff9b::a.b.c.d) address by its IPv4 part."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _is_public(ip: IPAddress) -> bool:
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT)
        or (isinstance(ip, ipaddress.IPv6Address) and (ip.sixtofour is not None or ip.teredo is not None))
    ):
        return False
    return ip.is_global


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
