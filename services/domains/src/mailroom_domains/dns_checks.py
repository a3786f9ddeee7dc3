"""The public-DNS record checker: asks the configured resolvers (dnspython's async resolver) for
each record a tenant should have published and says, record by record, whether it is right, what
was found instead, and why.

Outcomes per record:
* the expected answer → `verified`;
* a different answer (a CNAME to elsewhere, an MX to another host, an SPF record without
  `include:amazonses.com`, two SPF records) → `failed`, with what was found;
* nothing there (NXDOMAIN, or the name has no record of that type) → `pending` ("not published yet");
* no usable answer (SERVFAIL, REFUSED, timeout) → the record keeps its previous status: a resolver's
  bad minute must not put a verified domain into `temporary_failure`. The detail says which.

A DMARC record is recommended, not required: any `v=DMARC1` record of the tenant's counts, a missing
one stays `pending`. An existing SPF record on the MAIL FROM domain that already includes
amazonses.com counts (tenants merge ours into theirs: one name may hold only one SPF record).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
from mailroom_contracts.events import DomainRecord, DomainSnapshot

from mailroom_domains.checks import RecordCheck
from mailroom_domains.records import SPF_INCLUDE
from mailroom_domains.ses import SesIdentity
from mailroom_domains.settings import DomainsSettings


@dataclass(frozen=True)
class Answer:
    """What one lookup gave: `values` (normalised text of each record), or `missing` (NXDOMAIN /
    no record of the type), or `error` (no usable answer)."""

    values: tuple[str, ...] = ()
    missing: str | None = None
    error: str | None = None


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class DnsRecordChecker:
    """Checks records against public DNS. `tcp` asks over TCP only (UDP falls back to TCP by itself
    when an answer is truncated)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, *, tcp: bool = False) -> None:
        self._resolver = resolver
        self._tcp = tcp

    @classmethod
    def create(
        cls, nameservers: Sequence[str], *, port: int = 53, timeout: float = 3.0, tcp: bool = False
    ) -> DnsRecordChecker:
        """Resolvers `nameservers` on `port`; none given = the system's (resolv.conf)."""
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(nameservers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.port = port
        resolver.timeout = timeout
        resolver.lifetime = timeout
        resolver.cache = None  # every check asks again: a record deleted a minute ago must show
        return cls(resolver, tcp=tcp)

    @classmethod
    def from_settings(cls, settings: DomainsSettings) -> DnsRecordChecker:
        return cls.create(
            settings.nameservers,
            port=settings.dns_port,
            timeout=settings.dns_timeout_seconds,
            tcp=settings.dns_transport == "tcp",
        )

    async def lookup(self, name: str, rdtype: str) -> Answer:
        try:
            answer = await self._resolver.resolve(name, rdtype, tcp=self._tcp, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(missing=f"NXDOMAIN: {name} does not exist")
        except dns.resolver.NoAnswer:
            return Answer(missing=f"no {rdtype} record at {name}")
        except dns.resolver.NoNameservers as exc:
            return Answer(error=f"SERVFAIL: no resolver could answer for {name} ({_first_error(exc)})")
        except dns.exception.Timeout:
            return Answer(error=f"timeout: no answer for {name} {rdtype}")
        except dns.exception.DNSException as exc:
            return Answer(error=f"DNS error for {name} {rdtype}: {type(exc).__name__}")
        values: list[str] = []
        for rdata in answer:
            if rdata.rdtype == dns.rdatatype.CNAME:
                values.append(_text(rdata.target))
            elif rdata.rdtype == dns.rdatatype.MX:
                values.append(f"{rdata.preference} {_text(rdata.exchange)}")
            elif rdata.rdtype == dns.rdatatype.TXT:
                # One TXT record may be split into several strings (each ≤ 255 bytes): they are one value.
                values.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        return Answer(values=tuple(values))

    async def check(
        self, domain: DomainSnapshot, records: Sequence[DomainRecord], *, identity: SesIdentity
    ) -> list[RecordCheck]:
        return list(await asyncio.gather(*(self._check_one(r) for r in records)))

    async def _check_one(self, record: DomainRecord) -> RecordCheck:
        answer = await self.lookup(record.name, record.type)
        if answer.error is not None:
            return RecordCheck(record.status, list(record.found), answer.error)
        if answer.missing is not None:
            return RecordCheck("pending", [], answer.missing)
        found = list(answer.values)
        if record.purpose == "dkim":
            return _judge_cname(record, found)
        if record.purpose == "mail_from_mx":
            return _judge_mx(record, found)
        if record.purpose == "mail_from_spf":
            return _judge_spf(found)
        return _judge_dmarc(found)


def _first_error(exc: dns.resolver.NoNameservers) -> str:
    errors = exc.kwargs.get("errors") or []
    if errors:
        return str(errors[0][3])
    return "no nameserver answered"


def _judge_cname(record: DomainRecord, found: list[str]) -> RecordCheck:
    expected = record.value.lower().rstrip(".")
    if expected in found:
        return RecordCheck("verified", found)
    return RecordCheck("failed", found, f"CNAME points to {', '.join(found)}, expected {expected}")


def _judge_mx(record: DomainRecord, found: list[str]) -> RecordCheck:
    expected = record.value.lower().rstrip(".")
    if any(v.split(" ", 1)[-1] == expected for v in found):
        return RecordCheck("verified", found)
    return RecordCheck("failed", found, f"MX points to {', '.join(found)}, expected {record.priority} {expected}")


def _judge_spf(found: list[str]) -> RecordCheck:
    spf = [v for v in found if v.lower() == "v=spf1" or v.lower().startswith("v=spf1 ")]
    if not spf:
        return RecordCheck("pending", found, "no SPF record (TXT v=spf1 …) at the MAIL FROM domain")
    if len(spf) > 1:
        return RecordCheck("failed", found, "more than one SPF record: merge them into one (RFC 7208)")
    mechanisms = [m.lstrip("+").lower() for m in spf[0].split()[1:]]
    if SPF_INCLUDE in mechanisms:
        return RecordCheck("verified", found)
    return RecordCheck("failed", found, f"the SPF record does not contain {SPF_INCLUDE}")


def _judge_dmarc(found: list[str]) -> RecordCheck:
    if any(v.replace(" ", "").upper().startswith("V=DMARC1;") or v.strip().upper() == "V=DMARC1" for v in found):
        return RecordCheck("verified", found)
    return RecordCheck("pending", found, "no DMARC record (TXT v=DMARC1; …); recommended, not required")
