"""Pure rules about domain names and the DNS records a tenant must publish (SPEC §2 "Domains").

No I/O here: name normalisation/validation and the exact records for a domain, in the order
they are shown to tenants (three DKIM CNAMEs, MAIL FROM MX, MAIL FROM SPF, DMARC).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

import idna
from mailroom_contracts.events import DomainRecord
from publicsuffixlist import PublicSuffixList

from mailroom_domains.errors import InvalidInput

MAX_NAME_LENGTH = 253
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

SPF_INCLUDE = "include:amazonses.com"
SPF_VALUE = f"v=spf1 {SPF_INCLUDE} ~all"
DMARC_VALUE = "v=DMARC1; p=none;"
MAIL_FROM_MX_PRIORITY = 10


# The Public Suffix List bundled with the `publicsuffixlist` package (ICANN and private sections;
# read once, never fetched at run time). A bare suffix (`co.uk`, `github.io`) is nobody's domain.
_PSL = PublicSuffixList()


# Special-use TLDs no public resolver answers for (`.test` and `.example` stay allowed: docs and tests use them).
_NEVER_PUBLIC = frozenset({"localhost", "local", "invalid", "onion"})


def is_public_suffix(name: str) -> bool:
    return bool(_PSL.is_public(name))


def is_valid_label(label: str) -> bool:
    """1-63 chars of [a-z0-9-], not starting or ending with '-' (lower-case ASCII only)."""
    return bool(_LABEL.match(label))


def normalize_domain_name(raw: str) -> str:
    """The lower-case ASCII (A-label) form of a sending domain, or InvalidInput(param="name")."""

    def invalid(why: str) -> InvalidInput:
        return InvalidInput(f"name {why}", param="name")

    name = raw.strip().lower()
    if not name:
        raise invalid("is required")
    if name.endswith("."):
        raise invalid("must not end with a dot")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise invalid(f"is not a valid internationalized domain name ({exc})") from None
    if _is_ip_address(name):
        raise invalid("must be a domain name, not an IP address")
    if len(name) > MAX_NAME_LENGTH:
        raise invalid(f"must be at most {MAX_NAME_LENGTH} characters")
    labels = name.split(".")
    if len(labels) < 2:
        raise invalid("must have at least two labels (e.g. mail.example.com)")
    for label in labels:
        if not is_valid_label(label):
            raise invalid(
                f"has an invalid label {label!r}: 1-63 letters, digits or '-', not starting or ending with '-'"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise invalid(f"has an invalid punycode label {label!r}") from None
    if labels[-1].isdigit():
        raise invalid("must end with a top-level domain, not a number")
    if labels[-1] in _NEVER_PUBLIC:
        raise invalid(f"is under .{labels[-1]}, which never resolves in public DNS (RFC 6761/6762)")
    if is_public_suffix(name):
        raise invalid(f"{name!r} is a public suffix: add a domain you own under it (e.g. mail.example.{name})")
    return name


def normalize_mail_from_subdomain(raw: str, domain_name: str) -> str:
    """One valid label such that `<label>.<domain>` is a valid name, or InvalidInput(param=...)."""
    label = raw.strip().lower()
    if not is_valid_label(label):
        raise InvalidInput(
            "mail_from_subdomain must be a single label: 1-63 letters, digits or '-', not starting or ending with '-'",
            param="mail_from_subdomain",
        )
    if len(label) + 1 + len(domain_name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"mail_from_subdomain makes the MAIL FROM domain longer than {MAX_NAME_LENGTH} characters",
            param="mail_from_subdomain",
        )
    return label


def _is_ip_address(name: str) -> bool:
    candidate = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def mail_from_domain(name: str, subdomain: str) -> str:
    return f"{subdomain}.{name}"


def feedback_host(region: str) -> str:
    return f"feedback-smtp.{region}.amazonses.com"


def compute_records(name: str, mail_from: str, dkim_tokens: Sequence[str], region: str) -> list[DomainRecord]:
    """The records a tenant publishes for `name`, all `pending`."""
    records = [
        DomainRecord(
            purpose="dkim", type="CNAME", name=f"{token}._domainkey.{name}", value=f"{token}.dkim.amazonses.com"
        )
        for token in dkim_tokens
    ]
    records.append(
        DomainRecord(
            purpose="mail_from_mx",
            type="MX",
            name=mail_from,
            value=feedback_host(region),
            priority=MAIL_FROM_MX_PRIORITY,
        )
    )
    records.append(DomainRecord(purpose="mail_from_spf", type="TXT", name=mail_from, value=SPF_VALUE))
    records.append(DomainRecord(purpose="dmarc", type="TXT", name=f"_dmarc.{name}", value=DMARC_VALUE, required=False))
    return records
