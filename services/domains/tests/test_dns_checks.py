"""The DNS checker against a real local authoritative DNS server (UDP and TCP), record by record:
what it finds, what it concludes, and how it tells a missing record from a broken resolver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mailroom_contracts.events import DomainRecord
from mailroom_devstack.dns import DnsServer
from mailroom_domains.dns_checks import DnsRecordChecker

ZONE = "mail.dnscheck.test"
MX = DomainRecord(
    purpose="mail_from_mx", type="MX", name=f"bounce.{ZONE}", value="feedback-smtp.eu-west-1.amazonses.com", priority=10
)
SPF = DomainRecord(
    purpose="mail_from_spf", type="TXT", name=f"bounce.{ZONE}", value="v=spf1 include:amazonses.com ~all"
)
DKIM = DomainRecord(purpose="dkim", type="CNAME", name=f"abc._domainkey.{ZONE}", value="abc.dkim.amazonses.com")
DMARC = DomainRecord(purpose="dmarc", type="TXT", name=f"_dmarc.{ZONE}", value="v=DMARC1; p=none;", required=False)


@pytest.fixture
def server(dns_server: DnsServer) -> DnsServer:
    dns_server.zone.clear()
    return dns_server


def checker(server: DnsServer, *, tcp: bool = False) -> DnsRecordChecker:
    return DnsRecordChecker.create(["127.0.0.1"], port=server.port, timeout=1.0, tcp=tcp)


async def one(server: DnsServer, record: DomainRecord, **kw: Any) -> tuple[str, list[str], str | None]:
    check = (await checker(server, **kw).check(None, [record], identity=None))[0]  # type: ignore[arg-type]
    return check.status, check.found, check.detail


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_absent_wrong_and_right_records(server: DnsServer, tcp: bool) -> None:
    status, found, detail = await one(server, MX, tcp=tcp)
    assert (status, found) == ("pending", []) and detail is not None and "NXDOMAIN" in detail
    server.zone.add(f"bounce.{ZONE}", "MX", "10 mx.other-provider.test")
    status, found, detail = await one(server, MX, tcp=tcp)
    assert (status, found) == ("failed", ["10 mx.other-provider.test"])
    assert detail is not None and "feedback-smtp.eu-west-1.amazonses.com" in detail
    server.zone.set(f"bounce.{ZONE}", "MX", ["10 feedback-smtp.eu-west-1.amazonses.com"])
    assert (await one(server, MX, tcp=tcp))[0] == "verified"
    # The name exists now (MX) but holds no TXT: told apart from NXDOMAIN.
    status, _, detail = await one(server, SPF, tcp=tcp)
    assert status == "pending" and detail == f"no TXT record at bounce.{ZONE}"


async def test_an_existing_spf_record_is_judged_by_its_include(server: DnsServer) -> None:
    name = f"bounce.{ZONE}"
    server.zone.add(name, "TXT", "v=spf1 include:_spf.google.com ~all")
    status, found, detail = await one(server, SPF)
    assert (status, found) == ("failed", ["v=spf1 include:_spf.google.com ~all"])
    assert detail is not None and "include:amazonses.com" in detail
    merged = "v=spf1 include:_spf.google.com include:amazonses.com ~all"
    server.zone.set(name, "TXT", [merged, "google-site-verification=xyz"])  # other TXT records are fine
    status, found, _ = await one(server, SPF)
    assert status == "verified" and merged in found
    server.zone.set(name, "TXT", [merged, "v=spf1 -all"])  # two SPF records break SPF (RFC 7208)
    status, _, detail = await one(server, SPF)
    assert status == "failed" and detail is not None and "more than one SPF record" in detail


async def test_a_long_txt_record_split_in_strings_is_one_value(server: DnsServer) -> None:
    long_spf = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(1, 30)) + " include:amazonses.com ~all"
    assert len(long_spf) > 255  # served as several strings of one TXT record
    server.zone.add(f"bounce.{ZONE}", "TXT", long_spf)
    status, found, _ = await one(server, SPF)
    assert (status, found) == ("verified", [long_spf])


async def test_dkim_cname_and_the_tenants_own_dmarc(server: DnsServer) -> None:
    server.zone.add(DKIM.name, "CNAME", "abc.dkim.elsewhere.test")
    status, found, _ = await one(server, DKIM)
    assert (status, found) == ("failed", ["abc.dkim.elsewhere.test"])
    server.zone.set(DKIM.name, "CNAME", ["abc.dkim.amazonses.com"])
    assert (await one(server, DKIM))[0] == "verified"
    assert (await one(server, DMARC))[0] == "pending"
    server.zone.add(DMARC.name, "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@dnscheck.test")
    assert (await one(server, DMARC))[0] == "verified"  # the tenant's own policy counts


async def test_a_broken_resolver_keeps_the_record_status_and_says_why(server: DnsServer) -> None:
    verified = DomainRecord(**{**_fields(DKIM), "status": "verified"})
    server.zone.fault(DKIM.name, "servfail")
    status, _, detail = await one(server, verified)
    assert status == "verified" and detail is not None and detail.startswith("SERVFAIL")
    server.zone.fault(DKIM.name, "timeout")
    status, _, detail = await one(server, verified)
    assert status == "verified" and detail is not None and detail.startswith("timeout")


def _fields(record: DomainRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in record.__struct_fields__}


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_a_slow_server_is_waited_for_up_to_the_timeout(server: DnsServer, tcp: bool) -> None:
    server.zone.add(DKIM.name, "CNAME", DKIM.value)
    server.zone.latency = 0.3
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await one(server, DKIM, tcp=tcp))[0] == "verified"  # within the 1 s timeout
    assert loop.time() - started >= 0.3
    server.zone.latency = 1.5
    status, _, detail = await one(server, DKIM, tcp=tcp)
    assert status == "pending" and detail is not None and detail.startswith("timeout")
