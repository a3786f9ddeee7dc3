"""How a domain's verification is judged.

Two steps, both pure apart from the checker's own lookups:

1. A `RecordChecker` gives each DNS record a status. This is the seam for public-DNS checks:
   the shipped `SesStatusChecker` derives record statuses from what SES reports about the
   identity; a dnspython checker (resolving each record on configurable resolvers) can
   replace or wrap it without touching the poller, the repository or `decide_status`.
2. `decide_status` turns the SES identity, the record statuses and the domain's age into the
   domain status (SPEC §2): verified / partially_verified / pending / temporary_failure / failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailroom_contracts.events import DomainRecord, DomainSnapshot, DomainStatus, RecordStatus

from mailroom_domains.ses import SesIdentity


class RecordChecker(Protocol):
    """Decides the status of each of a domain's records (same order as `records`).

    `identity` is what SES reported in this check (fetched once, so checkers never call SES again);
    a DNS checker may ignore it or combine it with what public resolvers answer.
    """

    async def check(
        self, domain: DomainSnapshot, records: Sequence[DomainRecord], *, identity: SesIdentity
    ) -> list[RecordStatus]: ...


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
    ) -> list[RecordStatus]:
        statuses: list[RecordStatus] = []
        for record in records:
            if not identity.exists:
                statuses.append("pending")
            elif record.purpose == "dkim":
                statuses.append(_from_ses(identity.dkim_status))
            elif record.purpose in ("mail_from_mx", "mail_from_spf"):
                same_domain = (identity.mail_from_domain or "").lower() == domain.mail_from_domain
                statuses.append(_from_ses(identity.mail_from_status) if same_domain else "pending")
            else:
                statuses.append("pending")
        return statuses


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
) -> Decision:
    """The domain's status after a check. `records` carry the statuses the checker just gave."""
    if identity.dkim_status == "FAILED":
        return Decision("failed", "SES reported that DKIM verification failed")
    if identity.verification_status == "FAILED":
        return Decision("failed", "SES reported that identity verification failed")
    dkim_verified = all(r.status == "verified" for r in records if r.purpose == "dkim")
    if identity.verified_for_sending and identity.dkim_status == "SUCCESS" and dkim_verified:
        return Decision("verified")
    if previous in ("verified", "temporary_failure"):
        # It was verified once: its records vanished or SES lost it. Sending stops until it recovers;
        # SES itself fails the identity if that lasts (72 h), which we then follow.
        return Decision("temporary_failure")
    if now - created_at >= timeout:
        hours = timeout.total_seconds() / 3600
        return Decision("failed", f"not verified within {hours:g} hours")
    if any(r.status == "verified" for r in records if r.required):
        return Decision("partially_verified")
    return Decision("pending")
