"""The domains service's rules: registering a tenant's sending domain with SES, and turning
periodic checks into status transitions published through the outbox.

Functions that touch the database take the caller's connection; the edge (handlers.py) owns
every transaction. SES is never called inside a transaction.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from mailroom_contracts.events import (
    DomainCreated,
    DomainDeleted,
    DomainEvent,
    DomainFailed,
    DomainRecord,
    DomainSnapshot,
    DomainStatus,
    DomainStatusChanged,
    DomainUpdated,
    DomainVerified,
)
from mailroom_contracts.rpc import CreateDomainRequest, UpdateDomainRequest
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id

from mailroom_domains import repository
from mailroom_domains.checks import RecordCheck, RecordChecker, decide_status
from mailroom_domains.errors import Conflict, InvalidInput, NotFound
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
    region: str

    @property
    def mail_from_domain(self) -> str:
        return mail_from_domain(self.name, self.mail_from_subdomain)


@dataclass(frozen=True)
class Observation:
    """What one check saw, before it is applied: SES's view and each record's status. `check_seq`
    numbers the checks of the domain in the order they began (`DomainService.begin_check`)."""

    domain_id: str
    identity: SesIdentity
    checks: list[RecordCheck]
    check_seq: int

    @property
    def record_statuses(self) -> list[str]:
        return [c.status for c in self.checks]


@dataclass(frozen=True)
class CheckOutcome:
    """What applying a check did: the event it queued (None: nothing changed, or not applied), and
    whether it was dropped because a check that began later had already been applied."""

    event: DomainEvent | None = None
    superseded: bool = False


class DomainService:
    """`clock` (tests: an injectable clock) is the time of claims, checks, the schedule and the
    72-hour expiry; None uses the database's clock. `rng` jitters the schedule."""

    def __init__(
        self,
        settings: DomainsSettings,
        ses: SesClient,
        checker: RecordChecker,
        *,
        clock: Callable[[], datetime] | None = None,
        rng: random.Random | None = None,
        ses_for_region: Callable[[str], SesClient] | None = None,
    ) -> None:
        self.settings = settings
        self.ses = ses
        self.checker = checker
        self.clock = clock
        self._rng = rng or random.Random()
        self._ses_for_region = ses_for_region
        self._regional: dict[str, SesClient] = {settings.aws_region: ses}

    def ses_for(self, region: str) -> SesClient:
        """The SES client of `region` (the default region's is `ses`; others are made on first use)."""
        client = self._regional.get(region)
        if client is None:
            if self._ses_for_region is None:
                raise InvalidInput(f"region {region} is not enabled", param="region")
            client = self._regional[region] = self._ses_for_region(region)
        return client

    def now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None

    # ------------------------------------------------------------------ create

    def validate(self, req: CreateDomainRequest) -> NewDomain:
        name = normalize_domain_name(req.name)
        raw_sub = (
            req.mail_from_subdomain if req.mail_from_subdomain.strip() else self.settings.default_mail_from_subdomain
        )
        sub = normalize_mail_from_subdomain(raw_sub, name)
        region = (req.region or self.settings.aws_region).strip().lower()
        if region not in self.settings.regions:
            raise InvalidInput(
                f"region must be one of {', '.join(self.settings.regions)} (MAILROOM_DOMAINS_ALLOWED_REGIONS)",
                param="region",
            )
        return NewDomain(
            tenant_id=req.tenant_id,
            name=name,
            mail_from_subdomain=sub,
            track_opens=req.track_opens,
            track_clicks=req.track_clicks,
            region=region,
        )

    async def ensure_available(self, conn: Conn, new: NewDomain) -> DomainSnapshot | None:
        """The tenant's own live domain of that name, if it has one (adding it again is idempotent:
        the caller answers with it); conflict if another tenant holds the name (any status but failed)."""
        holder = await repository.find_live_holder(conn, new.name)
        if holder is None:
            return None
        if holder.tenant_id != new.tenant_id:
            raise _conflict(new, holder.tenant_id)
        return await repository.get_domain(conn, holder.domain_id)

    async def provision(self, new: NewDomain) -> tuple[str, ...]:
        """Create (or reuse) the SES identity with Easy DKIM and set its MAIL FROM; the DKIM tokens."""
        ses = self.ses_for(new.region)
        tokens = await ses.create_domain_identity(new.name)
        await ses.set_mail_from(new.name, new.mail_from_domain)
        return tokens

    async def register(self, conn: Conn, new: NewDomain, dkim_tokens: tuple[str, ...]) -> DomainSnapshot:
        """Store the domain and its records and queue `DomainCreated` (caller's transaction)."""
        records = compute_records(new.name, new.mail_from_domain, dkim_tokens, new.region)
        snapshot = await repository.insert_domain(
            conn,
            domain_id=new_id("dom"),
            tenant_id=new.tenant_id,
            name=new.name,
            region=new.region,
            mail_from_subdomain=new.mail_from_subdomain,
            mail_from_domain=new.mail_from_domain,
            track_opens=new.track_opens,
            track_clicks=new.track_clicks,
            records=records,
        )
        if snapshot is None:  # another request registered it between our check and insert
            holder = await repository.find_live_holder(conn, new.name)
            if holder is not None and holder.tenant_id == new.tenant_id:
                existing = await repository.get_domain(conn, holder.domain_id)
                if existing is not None:
                    return existing
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
            conn, limit=self.settings.check_batch_size, lease_seconds=self.settings.claim_lease_seconds, now=self.now()
        )

    async def begin_check(self, conn: Conn, domain_id: str) -> tuple[DomainSnapshot, int] | None:
        """The domain as a check of it begins, and the check's number (its own transaction, committed
        before SES and DNS are asked, so a later check always gets a higher number)."""
        return await repository.start_check(conn, domain_id)

    async def observe(self, domain: DomainSnapshot, check_seq: int) -> Observation:
        """Ask SES about the identity and the record checker about each record (no database)."""
        identity = await self.ses_for(domain.region).get_identity(domain.name)
        checks = await self.checker.check(domain, domain.records, identity=identity)
        if len(checks) != len(domain.records):
            raise ValueError(f"record checker returned {len(checks)} results for {len(domain.records)} records")
        return Observation(domain_id=domain.domain_id, identity=identity, checks=list(checks), check_seq=check_seq)

    async def apply(self, conn: Conn, observation: Observation) -> CheckOutcome:
        """Apply a check under the domain's row lock; queue an event if anything changed.

        The transition is decided against the status stored *now*, so two checks of the same domain
        (a lease that expired mid-check, a verify request during a check) publish a transition once;
        and a check that began before the check already applied is dropped (`superseded`): its older
        view would move the status back (verified → temporary_failure → verified: two false events).
        """
        locked = await repository.lock_domain(conn, observation.domain_id)
        if locked is None or locked.snapshot.status == "failed":
            return CheckOutcome()
        if observation.check_seq <= locked.applied_check_seq:
            return CheckOutcome(superseded=True)
        before, now = locked.snapshot, locked.db_now
        if self.clock is not None:  # never before the last check, as the database clock is read
            now = max(self.clock(), before.last_checked_at or self.clock())
        records = [
            msgspec.structs.replace(r, status=c.status, found=list(c.found), detail=c.detail, last_checked_at=now)
            for r, c in zip(before.records, observation.checks, strict=True)
        ]
        decision = decide_status(
            previous=before.status,
            identity=observation.identity,
            records=records,
            created_at=before.created_at,
            now=now,
            timeout=timedelta(hours=self.settings.verification_timeout_hours),
            status_since=locked.status_since,
        )
        await repository.save_check(
            conn,
            before.domain_id,
            status=decision.status,
            record_statuses=[c.status for c in observation.checks],
            failure_reason=decision.reason,
            checked_at=now,
            next_check_in_seconds=self.next_check_in(decision.status, created_at=before.created_at, now=now),
            record_found=[c.found for c in observation.checks],
            record_details=[c.detail for c in observation.checks],
            check_seq=observation.check_seq,
        )
        after = msgspec.structs.replace(before, status=decision.status, records=records, last_checked_at=now)
        event = _transition_event(before, after, decision.reason)
        if event is not None:
            await outbox.add(conn, event, schema=SCHEMA)
        return CheckOutcome(event=event)

    def next_check_in(self, status: DomainStatus, *, created_at: datetime, now: datetime) -> float:
        """Seconds until the next check: verified domains every RECHECK_INTERVAL; a domain being
        verified every POLL_INTERVAL in its first FAST_PHASE, then every SLOW_POLL_INTERVAL; a
        temporary failure every POLL_INTERVAL (sending is stopped: notice the recovery at once).
        Jittered by ± SCHEDULE_JITTER so domains added together drift apart. A domain still being
        verified is never scheduled past its VERIFICATION_TIMEOUT: it fails at 72 h, not up to a slow
        interval later."""
        s = self.settings
        if status == "verified":
            base = s.recheck_interval_seconds
        elif status == "temporary_failure" or (now - created_at).total_seconds() < s.fast_phase_seconds:
            base = s.poll_interval_seconds
        else:
            base = s.slow_poll_interval_seconds
        seconds = base * (1 + self._rng.uniform(-s.schedule_jitter, s.schedule_jitter))
        if status in ("pending", "partially_verified"):
            left = (created_at + timedelta(hours=s.verification_timeout_hours) - now).total_seconds()
            if left > 0:
                seconds = min(seconds, left)
        return seconds

    async def postpone(self, conn: Conn, domain_id: str) -> None:
        await repository.postpone_check(conn, domain_id, seconds=self.settings.poll_interval_seconds, now=self.now())

    # ------------------------------------------------------------------ issue 18: verify now, update, delete

    async def request_check(self, conn: Conn, tenant_id: str, domain_id: str) -> DomainSnapshot:
        """Make the tenant's domain due now (the poller is woken by the edge); its current snapshot."""
        domain = await repository.find_tenant_domain(conn, tenant_id, domain_id)
        if domain is None:
            raise NotFound("domain not found")
        if domain.status == "failed":
            raise Conflict("a failed domain is not checked again: delete it and add it again to restart verification")
        await repository.make_due(conn, domain_id, now=self.now())
        return domain

    async def update_tracking(self, conn: Conn, req: UpdateDomainRequest) -> tuple[DomainSnapshot, datetime]:
        """Change the tracking defaults (they pick the SES configuration set of the domain's sends);
        queues `DomainUpdated` when anything changed. The snapshot and the event's time."""
        before = await repository.lock_tenant_domain(conn, req.tenant_id, req.domain_id)
        if before is None:
            raise NotFound("domain not found")
        opens = before.track_opens if req.track_opens is None else req.track_opens
        clicks = before.track_clicks if req.track_clicks is None else req.track_clicks
        after = msgspec.structs.replace(before, track_opens=opens, track_clicks=clicks)
        at = _now()
        if (opens, clicks) != (before.track_opens, before.track_clicks):
            await repository.set_tracking(conn, before.domain_id, track_opens=opens, track_clicks=clicks)
            await outbox.add(
                conn,
                DomainUpdated(event_id=new_id("evt"), occurred_at=at, tenant_id=after.tenant_id, domain=after),
                schema=SCHEMA,
            )
        return after, at

    async def find_for_delete(self, conn: Conn, tenant_id: str, domain_id: str) -> tuple[DomainSnapshot, bool]:
        """The tenant's domain, and whether its SES identity is its own to delete: a failed domain's
        name may since have been registered again (by anyone), whose identity it then is."""
        domain = await repository.find_tenant_domain(conn, tenant_id, domain_id)
        if domain is None:
            raise NotFound("domain not found")
        holder = await repository.find_live_holder(conn, domain.name)
        return domain, holder is None or holder.domain_id == domain.domain_id

    async def delete_identity(self, domain: DomainSnapshot) -> None:
        """Delete the SES identity (no transaction is open; an identity already gone is fine)."""
        await self.ses_for(domain.region).delete_identity(domain.name)

    async def remove(self, conn: Conn, tenant_id: str, domain_id: str) -> tuple[DomainSnapshot, datetime]:
        """Delete the domain and queue `DomainDeleted` (one transaction): sends from it stop."""
        domain = await repository.lock_tenant_domain(conn, tenant_id, domain_id)
        if domain is None:
            raise NotFound("domain not found")
        await repository.delete_domain(conn, domain_id)
        at = _now()
        await outbox.add(
            conn,
            DomainDeleted(event_id=new_id("evt"), occurred_at=at, tenant_id=tenant_id, domain=domain),
            schema=SCHEMA,
        )
        return domain, at


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
    if [_shown(r) for r in after.records] != [_shown(r) for r in before.records]:
        return DomainStatusChanged(
            event_id=event_id, occurred_at=at, tenant_id=tenant, domain=after, previous_status=before.status
        )
    return None


def _shown(record: DomainRecord) -> tuple[str, list[str], str | None]:
    """What a tenant sees change about a record (its check time alone is no change)."""
    return (record.status, record.found, record.detail)


def _conflict(new: NewDomain, holder_tenant_id: str | None) -> Conflict:
    if holder_tenant_id == new.tenant_id:
        return Conflict(f"domain {new.name} already exists", param="name")
    return Conflict(f"domain {new.name} is already registered by another account", param="name")


def _now() -> datetime:
    return datetime.now(UTC)
