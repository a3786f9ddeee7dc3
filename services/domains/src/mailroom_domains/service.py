"""The domains service's rules: registering a tenant's sending domain with SES, and turning
periodic checks into status transitions published through the outbox.

Functions that touch the database take the caller's connection; the edge (handlers.py) owns
every transaction. SES is never called inside a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from mailroom_contracts.events import (
    DomainCreated,
    DomainEvent,
    DomainFailed,
    DomainSnapshot,
    DomainStatusChanged,
    DomainVerified,
    RecordStatus,
)
from mailroom_contracts.rpc import CreateDomainRequest
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id

from mailroom_domains import repository
from mailroom_domains.checks import RecordChecker, decide_status
from mailroom_domains.errors import Conflict
from mailroom_domains.records import (
    compute_records,
    mail_from_domain,
    normalize_domain_name,
    normalize_mail_from_subdomain,
)
from mailroom_domains.ses import SesClient, SesIdentity
from mailroom_domains.settings import DomainsSettings

SCHEMA = "domains"


@dataclass(frozen=True)
class NewDomain:
    """A validated create request."""

    tenant_id: str
    name: str
    mail_from_subdomain: str
    track_opens: bool
    track_clicks: bool

    @property
    def mail_from_domain(self) -> str:
        return mail_from_domain(self.name, self.mail_from_subdomain)


@dataclass(frozen=True)
class Observation:
    """What one check saw, before it is applied: SES's view and each record's status."""

    domain_id: str
    identity: SesIdentity
    record_statuses: list[RecordStatus]


class DomainService:
    def __init__(self, settings: DomainsSettings, ses: SesClient, checker: RecordChecker) -> None:
        self.settings = settings
        self.ses = ses
        self.checker = checker

    # ------------------------------------------------------------------ create

    def validate(self, req: CreateDomainRequest) -> NewDomain:
        name = normalize_domain_name(req.name)
        raw_sub = (
            req.mail_from_subdomain if req.mail_from_subdomain.strip() else self.settings.default_mail_from_subdomain
        )
        sub = normalize_mail_from_subdomain(raw_sub, name)
        return NewDomain(
            tenant_id=req.tenant_id,
            name=name,
            mail_from_subdomain=sub,
            track_opens=req.track_opens,
            track_clicks=req.track_clicks,
        )

    async def ensure_available(self, conn: Conn, new: NewDomain) -> None:
        """Conflict if the name is held (any status but failed), by this tenant or another."""
        holder = await repository.find_live_holder(conn, new.name)
        if holder is not None:
            raise _conflict(new, holder.tenant_id)

    async def provision(self, new: NewDomain) -> tuple[str, ...]:
        """Create (or reuse) the SES identity with Easy DKIM and set its MAIL FROM; the DKIM tokens."""
        tokens = await self.ses.create_domain_identity(new.name)
        await self.ses.set_mail_from(new.name, new.mail_from_domain)
        return tokens

    async def register(self, conn: Conn, new: NewDomain, dkim_tokens: tuple[str, ...]) -> DomainSnapshot:
        """Store the domain and its records and queue `DomainCreated` (caller's transaction)."""
        records = compute_records(new.name, new.mail_from_domain, dkim_tokens, self.settings.aws_region)
        snapshot = await repository.insert_domain(
            conn,
            domain_id=new_id("dom"),
            tenant_id=new.tenant_id,
            name=new.name,
            region=self.settings.aws_region,
            mail_from_subdomain=new.mail_from_subdomain,
            mail_from_domain=new.mail_from_domain,
            track_opens=new.track_opens,
            track_clicks=new.track_clicks,
            records=records,
        )
        if snapshot is None:  # another request registered it between our check and insert
            holder = await repository.find_live_holder(conn, new.name)
            raise _conflict(new, holder.tenant_id if holder else None)
        await outbox.add(
            conn,
            DomainCreated(event_id=new_id("evt"), occurred_at=_now(), tenant_id=new.tenant_id, domain=snapshot),
            schema=SCHEMA,
        )
        return snapshot

    # ------------------------------------------------------------------ verification

    async def claim_due(self, conn: Conn) -> list[str]:
        return await repository.claim_due(
            conn, limit=self.settings.check_batch_size, lease_seconds=self.settings.claim_lease_seconds
        )

    async def load(self, conn: Conn, domain_id: str) -> DomainSnapshot | None:
        return await repository.get_domain(conn, domain_id)

    async def observe(self, domain: DomainSnapshot) -> Observation:
        """Ask SES about the identity and the record checker about each record (no database)."""
        identity = await self.ses.get_identity(domain.name)
        statuses = await self.checker.check(domain, domain.records, identity=identity)
        if len(statuses) != len(domain.records):
            raise ValueError(f"record checker returned {len(statuses)} statuses for {len(domain.records)} records")
        return Observation(domain_id=domain.domain_id, identity=identity, record_statuses=list(statuses))

    async def apply(self, conn: Conn, observation: Observation) -> DomainEvent | None:
        """Apply a check under the domain's row lock; queue an event if anything changed.

        The transition is decided against the status stored *now*, so two checks of the same domain
        (a lease that expired mid-check, a manual check) publish a transition once.
        """
        locked = await repository.lock_domain(conn, observation.domain_id)
        if locked is None or locked.snapshot.status == "failed":
            return None
        before, now = locked.snapshot, locked.db_now
        records = [
            msgspec.structs.replace(r, status=s)
            for r, s in zip(before.records, observation.record_statuses, strict=True)
        ]
        decision = decide_status(
            previous=before.status,
            identity=observation.identity,
            records=records,
            created_at=before.created_at,
            now=now,
            timeout=timedelta(hours=self.settings.verification_timeout_hours),
        )
        next_in = (
            self.settings.recheck_interval_seconds
            if decision.status == "verified"
            else self.settings.poll_interval_seconds
        )
        await repository.save_check(
            conn,
            before.domain_id,
            status=decision.status,
            record_statuses=observation.record_statuses,
            failure_reason=decision.reason,
            checked_at=now,
            next_check_in_seconds=next_in,
        )
        after = msgspec.structs.replace(before, status=decision.status, records=records, last_checked_at=now)
        event = _transition_event(before, after, decision.reason)
        if event is not None:
            await outbox.add(conn, event, schema=SCHEMA)
        return event

    async def postpone(self, conn: Conn, domain_id: str) -> None:
        await repository.postpone_check(conn, domain_id, seconds=self.settings.poll_interval_seconds)


def _transition_event(before: DomainSnapshot, after: DomainSnapshot, reason: str | None) -> DomainEvent | None:
    """The event for a change: verified / failed / any other status move. A change of record
    statuses alone is a `DomainStatusChanged` whose previous_status equals the status, so read
    models keep each record's status current. Nothing changed → no event."""
    event_id, at, tenant = new_id("evt"), _now(), after.tenant_id
    if after.status != before.status:
        if after.status == "verified":
            return DomainVerified(event_id=event_id, occurred_at=at, tenant_id=tenant, domain=after)
        if after.status == "failed":
            return DomainFailed(
                event_id=event_id,
                occurred_at=at,
                tenant_id=tenant,
                domain=after,
                reason=reason or "verification failed",
            )
        return DomainStatusChanged(
            event_id=event_id, occurred_at=at, tenant_id=tenant, domain=after, previous_status=before.status
        )
    if [r.status for r in after.records] != [r.status for r in before.records]:
        return DomainStatusChanged(
            event_id=event_id, occurred_at=at, tenant_id=tenant, domain=after, previous_status=before.status
        )
    return None


def _conflict(new: NewDomain, holder_tenant_id: str | None) -> Conflict:
    if holder_tenant_id == new.tenant_id:
        return Conflict(f"domain {new.name} already exists", param="name")
    return Conflict(f"domain {new.name} is already registered by another account", param="name")


def _now() -> datetime:
    return datetime.now(UTC)
