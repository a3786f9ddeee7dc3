"""Pure rules: name validation, exact DNS records, record statuses from SES, status decisions, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from domains_testkit import ses_client
from mailroom_contracts.events import DomainRecord, DomainSnapshot
from mailroom_contracts.rpc import CreateDomainRequest
from mailroom_domains.checks import SesStatusChecker, decide_status
from mailroom_domains.errors import InvalidInput
from mailroom_domains.records import compute_records, normalize_domain_name, normalize_mail_from_subdomain
from mailroom_domains.service import DomainService
from mailroom_domains.ses import SesIdentity
from mailroom_domains.settings import DomainsSettings
from mailroom_kit.settings import SettingsError

VALID_NAMES = [
    ("mail.acme.com", "mail.acme.com"),
    ("Mail.ACME.com", "mail.acme.com"),
    ("  acme.com ", "acme.com"),
    ("a.io", "a.io"),
    ("x-1.a-b.co.uk", "x-1.a-b.co.uk"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("MAIL.Bücher.Example", "mail.xn--bcher-kva.example"),
    ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ("123.example.com", "123.example.com"),
    (f"{'a' * 63}.com", f"{'a' * 63}.com"),
    (".".join(["a" * 49] * 5) + ".com", ".".join(["a" * 49] * 5) + ".com"),  # 253 chars
]

INVALID_NAMES = [
    "",
    "   ",
    "localhost",
    "acme.com.",
    ".acme.com",
    "acme..com",
    "-acme.com",
    "acme-.com",
    "ac_me.com",
    "acme.com/x",
    "acme com.com",
    "user@acme.com",
    f"{'a' * 64}.com",
    ".".join(["a" * 49] * 5) + ".coms",  # 254 chars
    "10.0.0.1",
    "::1",
    "[2001:db8::1]",
    "2001:db8::1",
    "acme.123",
    "xn--zz.example",
    "☃.☃",
]


@pytest.mark.parametrize(("raw", "expected"), VALID_NAMES)
def test_valid_names_are_normalized(raw: str, expected: str) -> None:
    assert normalize_domain_name(raw) == expected
    assert len(normalize_domain_name(raw)) <= 253


@pytest.mark.parametrize("raw", INVALID_NAMES)
def test_invalid_names_are_refused_on_param_name(raw: str) -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_domain_name(raw)
    assert err.value.code == "validation_error" and err.value.param == "name"


@pytest.mark.parametrize(("raw", "expected"), [("bounce", "bounce"), ("MAIL-from", "mail-from"), ("m1", "m1")])
def test_valid_mail_from_subdomains(raw: str, expected: str) -> None:
    assert normalize_mail_from_subdomain(raw, "acme.com") == expected


@pytest.mark.parametrize("raw", ["", "a.b", "-x", "x-", "a_b", "bö", "x" * 64, "bounce.", "a b"])
def test_invalid_mail_from_subdomains(raw: str) -> None:
    with pytest.raises(InvalidInput) as err:
        normalize_mail_from_subdomain(raw, "acme.com")
    assert err.value.param == "mail_from_subdomain"


def test_mail_from_domain_must_stay_within_253_chars() -> None:
    name = ".".join(["a" * 49] * 5) + ".com"  # 253
    with pytest.raises(InvalidInput) as err:
        normalize_mail_from_subdomain("b", name)
    assert err.value.param == "mail_from_subdomain"


def test_validate_uses_the_default_subdomain_only_when_empty() -> None:
    settings = DomainsSettings(default_mail_from_subdomain="mf")
    service = DomainService(settings, ses_client("http://127.0.0.1:9"), SesStatusChecker())
    new = service.validate(CreateDomainRequest(tenant_id="ten_1", name="Acme.COM", mail_from_subdomain=""))
    assert (new.name, new.mail_from_subdomain, new.mail_from_domain) == ("acme.com", "mf", "mf.acme.com")
    assert service.validate(CreateDomainRequest(tenant_id="ten_1", name="acme.com")).mail_from_subdomain == "bounce"
    with pytest.raises(InvalidInput) as err:
        service.validate(CreateDomainRequest(tenant_id="ten_1", name="acme.com", mail_from_subdomain="a.b"))
    assert err.value.param == "mail_from_subdomain"


def test_records_are_computed_exactly() -> None:
    records = compute_records("mail.acme.com", "bounce.mail.acme.com", ["tok1", "tok2", "tok3"], "eu-west-1")
    assert [msgspec.to_builtins(r) for r in records] == [
        {
            "purpose": "dkim",
            "type": "CNAME",
            "name": "tok1._domainkey.mail.acme.com",
            "value": "tok1.dkim.amazonses.com",
            "priority": None,
            "required": True,
            "status": "pending",
            "found": [],
            "detail": None,
            "last_checked_at": None,
        },
        {
            "purpose": "dkim",
            "type": "CNAME",
            "name": "tok2._domainkey.mail.acme.com",
            "value": "tok2.dkim.amazonses.com",
            "priority": None,
            "required": True,
            "status": "pending",
            "found": [],
            "detail": None,
            "last_checked_at": None,
        },
        {
            "purpose": "dkim",
            "type": "CNAME",
            "name": "tok3._domainkey.mail.acme.com",
            "value": "tok3.dkim.amazonses.com",
            "priority": None,
            "required": True,
            "status": "pending",
            "found": [],
            "detail": None,
            "last_checked_at": None,
        },
        {
            "purpose": "mail_from_mx",
            "type": "MX",
            "name": "bounce.mail.acme.com",
            "value": "feedback-smtp.eu-west-1.amazonses.com",
            "priority": 10,
            "required": True,
            "status": "pending",
            "found": [],
            "detail": None,
            "last_checked_at": None,
        },
        {
            "purpose": "mail_from_spf",
            "type": "TXT",
            "name": "bounce.mail.acme.com",
            "value": "v=spf1 include:amazonses.com ~all",
            "priority": None,
            "required": True,
            "status": "pending",
            "found": [],
            "detail": None,
            "last_checked_at": None,
        },
        {
            "purpose": "dmarc",
            "type": "TXT",
            "name": "_dmarc.mail.acme.com",
            "value": "v=DMARC1; p=none;",
            "priority": None,
            "required": False,
            "status": "pending",
            "found": [],
            "detail": None,
            "last_checked_at": None,
        },
    ]


NOW = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)


def identity(
    *,
    status: str = "PENDING",
    dkim: str = "PENDING",
    verified: bool = False,
    mail_from: str | None = "PENDING",
    mail_from_domain: str | None = "bounce.acme.com",
) -> SesIdentity:
    return SesIdentity(
        exists=True,
        verified_for_sending=verified,
        verification_status=status,
        dkim_status=dkim,
        dkim_tokens=("a", "b", "c"),
        mail_from_domain=mail_from_domain,
        mail_from_status=mail_from,
    )


def snapshot(status: str = "pending") -> DomainSnapshot:
    return DomainSnapshot(
        domain_id="dom_1",
        tenant_id="ten_1",
        name="acme.com",
        status=status,  # type: ignore[arg-type]
        region="us-east-1",
        mail_from_domain="bounce.acme.com",
        records=compute_records("acme.com", "bounce.acme.com", ["a", "b", "c"], "us-east-1"),
        created_at=NOW - timedelta(hours=1),
    )


async def checked(ident: SesIdentity, status: str = "pending") -> list[DomainRecord]:
    snap = snapshot(status)
    checks = await SesStatusChecker().check(snap, snap.records, identity=ident)
    return [msgspec.structs.replace(r, status=c.status) for r, c in zip(snap.records, checks, strict=True)]


async def test_ses_status_checker_maps_dkim_and_mail_from_and_leaves_dmarc_pending() -> None:
    statuses = [r.status for r in await checked(identity(dkim="SUCCESS", mail_from="PENDING"))]
    assert statuses == ["verified"] * 3 + ["pending", "pending", "pending"]
    statuses = [r.status for r in await checked(identity(dkim="PENDING", mail_from="SUCCESS"))]
    assert statuses == ["pending"] * 3 + ["verified", "verified", "pending"]
    statuses = [r.status for r in await checked(identity(dkim="FAILED", mail_from="FAILED"))]
    assert statuses == ["failed"] * 3 + ["failed", "failed", "pending"]
    # SES reports another MAIL FROM domain than ours: our MAIL FROM records are not verified by it.
    statuses = [r.status for r in await checked(identity(mail_from="SUCCESS", mail_from_domain="x.acme.com"))]
    assert statuses[3:5] == ["pending", "pending"]
    assert [r.status for r in await checked(SesIdentity.missing())] == ["pending"] * 6


@pytest.mark.parametrize(
    ("previous", "ident", "age_hours", "expected"),
    [
        (
            "pending",
            identity(status="SUCCESS", dkim="SUCCESS", verified=True, mail_from="SUCCESS"),
            1,
            ("verified", None),
        ),
        # SES verified, MAIL FROM records not yet: partially verified (verified needs both halves) …
        (
            "pending",
            identity(status="SUCCESS", dkim="SUCCESS", verified=True, mail_from="PENDING"),
            1,
            ("partially_verified", None),
        ),
        # … and failed if it stays so for 72 h
        (
            "partially_verified",
            identity(status="SUCCESS", dkim="SUCCESS", verified=True, mail_from="PENDING"),
            80,
            ("failed", "not verified within 72 hours"),
        ),
        ("pending", identity(), 1, ("pending", None)),
        ("pending", identity(mail_from="SUCCESS"), 1, ("partially_verified", None)),
        ("partially_verified", identity(dkim="SUCCESS", verified=False), 1, ("partially_verified", None)),
        (
            "pending",
            identity(dkim="FAILED", status="FAILED"),
            1,
            ("failed", "SES reported that DKIM verification failed"),
        ),
        (
            "pending",
            identity(status="FAILED"),
            1,
            ("failed", "SES reported that identity verification failed"),
        ),
        (
            "verified",
            identity(status="FAILED", dkim="FAILED"),
            1,
            ("failed", "SES reported that DKIM verification failed"),
        ),
        ("pending", identity(), 72, ("failed", "not verified within 72 hours")),
        ("partially_verified", identity(mail_from="SUCCESS"), 73, ("failed", "not verified within 72 hours")),
        ("pending", identity(), 71.9, ("pending", None)),
        (
            "verified",
            identity(status="TEMPORARY_FAILURE", dkim="TEMPORARY_FAILURE"),
            500,
            ("temporary_failure", None),
        ),
        ("verified", SesIdentity.missing(), 500, ("temporary_failure", None)),
        (
            "temporary_failure",
            identity(status="SUCCESS", dkim="SUCCESS", verified=True, mail_from="SUCCESS"),
            500,
            ("verified", None),
        ),
        ("temporary_failure", identity(), 500, ("temporary_failure", None)),
    ],
)
async def test_decide_status(
    previous: str, ident: SesIdentity, age_hours: float, expected: tuple[str, str | None]
) -> None:
    records = await checked(ident, previous)
    decision = decide_status(
        previous=previous,
        identity=ident,
        records=records,  # type: ignore[arg-type]
        created_at=NOW - timedelta(hours=age_hours),
        now=NOW,
        timeout=timedelta(hours=72),
    )
    assert (decision.status, decision.reason) == expected


async def test_verified_needs_every_dkim_record_verified_by_the_checker() -> None:
    """The seam for public DNS: SES says verified, but the checker did not find one DKIM record."""
    ident = identity(status="SUCCESS", dkim="SUCCESS", verified=True, mail_from="SUCCESS")
    records = await checked(ident)
    records[1] = msgspec.structs.replace(records[1], status="pending")
    decision = decide_status(
        previous="pending",
        identity=ident,
        records=records,
        created_at=NOW,
        now=NOW,
        timeout=timedelta(hours=72),
    )
    assert decision.status == "partially_verified"


def test_settings_from_environment() -> None:
    env = {
        "MAILROOM_DOMAINS_PORT": "9100",
        "MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS": "0.5",
        "MAILROOM_DOMAINS_RECHECK_INTERVAL_SECONDS": "600",
        "MAILROOM_DOMAINS_VERIFICATION_TIMEOUT_HOURS": "48",
        "MAILROOM_DOMAINS_DEFAULT_MAIL_FROM_SUBDOMAIN": "mf",
        "MAILROOM_AWS_REGION": "eu-west-1",
        "MAILROOM_SES_ENDPOINT_URL": "http://127.0.0.1:4566",
    }
    s = DomainsSettings.from_env(env)
    assert (s.port, s.poll_interval_seconds, s.recheck_interval_seconds, s.verification_timeout_hours) == (
        9100,
        0.5,
        600,
        48,
    )
    assert (s.default_mail_from_subdomain, s.aws_region, s.ses_endpoint_url) == (
        "mf",
        "eu-west-1",
        "http://127.0.0.1:4566",
    )
    d = DomainsSettings.from_env({})
    assert (
        d.poll_interval_seconds,
        d.recheck_interval_seconds,
        d.verification_timeout_hours,
        d.default_mail_from_subdomain,
        d.aws_region,
        d.ses_endpoint_url,
    ) == (60, 10800, 72, "bounce", "us-east-1", None)
    assert (d.nameservers, d.dns_port, d.dns_timeout_seconds, d.dns_transport) == ([], 53, 3.0, "udp")
    assert (d.fast_phase_seconds, d.slow_poll_interval_seconds, d.schedule_jitter, d.regions) == (
        3600,
        900,
        0.1,
        ["us-east-1"],
    )
    dns = DomainsSettings.from_env(
        {
            "MAILROOM_DOMAINS_DNS_NAMESERVERS": "127.0.0.1, ::1",
            "MAILROOM_DOMAINS_DNS_PORT": "5353",
            "MAILROOM_DOMAINS_DNS_TRANSPORT": "tcp",
            "MAILROOM_DOMAINS_ALLOWED_REGIONS": "eu-west-1,us-east-1",
        }
    )
    assert (dns.nameservers, dns.dns_port, dns.dns_transport, dns.regions) == (
        ["127.0.0.1", "::1"],
        5353,
        "tcp",
        ["us-east-1", "eu-west-1"],
    )
    for var, bad in [
        ("MAILROOM_DOMAINS_DNS_NAMESERVERS", "dns.google"),
        ("MAILROOM_DOMAINS_DNS_PORT", "0"),
        ("MAILROOM_DOMAINS_DNS_TIMEOUT_SECONDS", "0"),
        ("MAILROOM_DOMAINS_DNS_TRANSPORT", "quic"),
        ("MAILROOM_DOMAINS_SCHEDULE_JITTER", "0.9"),
        ("MAILROOM_DOMAINS_SLOW_POLL_INTERVAL_SECONDS", "1"),
        ("MAILROOM_DOMAINS_POLL_INTERVAL_SECONDS", "0"),
        ("MAILROOM_DOMAINS_DEFAULT_MAIL_FROM_SUBDOMAIN", "a.b"),
        ("MAILROOM_DOMAINS_VERIFICATION_TIMEOUT_HOURS", "soon"),
    ]:
        with pytest.raises(SettingsError, match=var):
            DomainsSettings.from_env({var: bad})
