"""How a domain's verification is judged.

Two steps, both pure apart from the checker's own lookups:

1. A `RecordChecker` gives each DNS record a `RecordCheck`: its status, what was found and why.
   The service's checker is `dns_checks.DnsRecordChecker` (public DNS through dnspython's async
   resolver); `SesStatusChecker` derives record statuses from what SES reports about the identity
   (kept for tests and for deployments whose resolvers cannot see the tenants' zones).
2. `decide_status` turns the SES identity, the records and the domain's age into the domain status
   (SPEC §2): verified / partially_verified / pending / temporary_failure / failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from mailroom_contracts.events import DomainRecord, DomainSnapshot, DomainStatus, RecordStatus

from mailroom_domains.ses import SesIdentity


@dataclass(frozen=True)
class RecordCheck:
    """The outcome of checking one record: `found` is what DNS answered (empty when nothing or
    when the checker does not look at DNS), `detail` says why the status is what it is."""

    status: RecordStatus
    found: list[str] = field(default_factory=list)
    detail: str | None = None


class RecordChecker(Protocol):
    """Checks each of a domain's records (same order as `records`).

    `identity` is what SES reported in this check (fetched once, so checkers never call SES again);
    a DNS checker may ignore it or combine it with what the resolvers answer.
    """

    async def check(
        self, domain: DomainSnapshot, records: Sequence[DomainRecord], *, identity: SesIdentity
    ) -> list[RecordCheck]: ...


def _from_ses(status: str | None) -> RecordStatus:
    if status == "SUCCESS":
        return "verified"
    if status in ("FAILED", "TEMPORARY_FAILURE"):
        return "failed"
    return "pending"


class SesStatusChecker:
    """Record statuses from SES alone: DKIM CNAMEs follow `DkimAttributes.Status`, the MAIL FROM MX
    and SPF follow `MailFromAttributes.MailFromDomainStatus`; DMARC stays pending (SES does not
    check it; only a public-DNS checker can)."""

    async def check(
        self, domain: DomainSnapshot, records: Sequence[DomainRecord], *, identity: SesIdentity
    ) -> list[RecordCheck]:
        checks: list[RecordCheck] = []
        for record in records:
            if not identity.exists:
                checks.append(RecordCheck("pending"))
            elif record.purpose == "dkim":
                checks.append(RecordCheck(_from_ses(identity.dkim_status)))
            elif record.purpose in ("mail_from_mx", "mail_from_spf"):
                same_domain = (identity.mail_from_domain or "").lower() == domain.mail_from_domain
                checks.append(RecordCheck(_from_ses(identity.mail_from_status) if same_domain else "pending"))
            else:
                checks.append(RecordCheck("pending"))
        return checks


@dataclass(frozen=True)
class Decision:
    status: DomainStatus
    reason: str | None = None  # why, when `failed`


def decide_status(
    *,
    previous: DomainStatus,
    identity: SesIdentity,
    records: Sequence[DomainRecord],
    created_at: datetime,
    now: datetime,
    timeout: timedelta,
    status_since: datetime | None = None,
) -> Decision:
    """The domain's status after a check. `records` carry the statuses the checker just gave;
    `status_since` is when `previous` began (for how long a temporary failure has lasted).

    `verified` needs both halves: SES verified the identity for sending (Easy DKIM `SUCCESS`), and
    every required record (three DKIM CNAMEs, MAIL FROM MX and SPF) is right in public DNS. DMARC is
    recommended: it is checked and reported, never decisive. One half without the other, or some
    required records right, is `partially_verified`.
    """
    if identity.dkim_status == "FAILED":
        return Decision("failed", "SES reported that DKIM verification failed")
    if identity.verification_status == "FAILED":
        return Decision("failed", "SES reported that identity verification failed")
    required = [r for r in records if r.required]
    dns_ok = all(r.status == "verified" for r in required)
    ses_ok = identity.verified_for_sending and identity.dkim_status == "SUCCESS"
    if ses_ok and dns_ok:
        return Decision("verified")
    hours = timeout.total_seconds() / 3600
    if previous in ("verified", "temporary_failure"):
        # It was verified once: its records vanished or SES lost it. Sending stops until it
        # recovers; if it lasts as long as a new domain may take to verify, it fails.
        if previous == "temporary_failure" and status_since is not None and now - status_since >= timeout:
            return Decision("failed", f"records missing or SES not verified for {hours:g} hours")
        return Decision("temporary_failure")
    if now - created_at >= timeout:
        return Decision("failed", f"not verified within {hours:g} hours")
    if ses_ok or any(r.status == "verified" for r in required):
        return Decision("partially_verified")
    return Decision("pending")
