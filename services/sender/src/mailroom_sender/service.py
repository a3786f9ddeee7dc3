"""The sender's exactly-once state machine.

Per email one `deliveries` row moves pending → sending → sent | failed. The edge (handlers)
runs each step in its own transaction with the provider call in between:

1. `begin` (TX1): create/lock the row. sent/failed → duplicate delivery, nothing to do.
   `sending` → an earlier attempt may have reached SES (in doubt): wait for SES's Send
   event until `in_doubt_seconds` have passed, then send again (at-least-once fallback).
   Sooner, once per email, when Send events are flowing and this one's is missing: SES
   accepted a message more than `attempt_max_seconds` after this attempt started (so after
   this attempt's call had ended), its Send event reached us `in_doubt_grace_seconds` ago,
   and none came for this one (`SendEventProgress`).
   Otherwise mark it `sending` and commit *before* calling the provider.
2. `send`: the provider call, outside any transaction.
3. `record_sent` / `record_failed` / `release` (TX2): settle the row and write the event to
   the outbox in the same transaction.
4. `settle_accepted`: SES's Send event (EmailProviderAccepted) settles a row still in doubt.

Whichever of 3 and 4 settles first publishes the single EmailSent; the other does nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from mailroom_contracts import encode, subject_for
from mailroom_contracts.events import (
    EmailBounced,
    EmailComplained,
    EmailDelivered,
    EmailFailed,
    EmailProviderAccepted,
    EmailQueued,
    EmailSent,
    Event,
    TenantUpdated,
)
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger
from mailroom_kit.outbox import add as add_to_outbox
from mailroom_kit.outbox import channel

from mailroom_sender import repository
from mailroom_sender.errors import MessageBuildError, SenderError
from mailroom_sender.mime import build_message, recipients
from mailroom_sender.providers import Provider, SendResult

log = get_logger(__name__)

SCHEMA = "sender"
# EmailFailed.reason of a blocked tenant's queued and held emails (issue 23).
TENANT_BLOCKED = "tenant_blocked"


@dataclass(frozen=True)
class Prepared:
    """The MIME message and envelope of an email, or why it cannot be built."""

    raw: bytes
    recipients: list[str]
    error: MessageBuildError | None = None


@dataclass(frozen=True)
class Proceed:
    """Row is `sending` (committed): call the provider."""

    attempt: int
    resent_after_doubt: bool = False
    started_at: datetime | None = None  # the attempt's `attempt_started_at` (the database's clock)


@dataclass(frozen=True)
class Settled:
    """Already sent or failed: a duplicate delivery of EmailQueued."""

    state: str
    provider_message_id: str | None


@dataclass(frozen=True)
class InDoubt:
    """An earlier attempt may have reached SES; check again after `recheck_in` seconds."""

    remaining: float
    recheck_in: float


@dataclass(frozen=True)
class Refused:
    """The message could not be built; the row is failed and EmailFailed is in the outbox."""

    reason: str
    message: str


@dataclass(frozen=True)
class Held:
    """issue 23: the tenant is paused; the email is held (the sender's queue sends it after resume),
    or the sender's queue already owns it (a redelivered EmailQueued of a held email)."""

    state: str


Begin = Proceed | Settled | InDoubt | Refused | Held


def _now() -> datetime:
    return datetime.now(UTC)


class SendEventProgress:
    """How far SES's Send events have come, as this process has seen them: the latest SES
    acceptance time (`EmailProviderAccepted.occurred_at`) whose event arrived at least `grace`
    seconds ago. In memory and per replica (after a restart it knows nothing, and in-doubt
    sends wait the full timeout); O(1) per event."""

    def __init__(self, grace: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._grace = grace
        self._clock = clock
        # (seen at, accepted at), both increasing: an event accepted no later than one seen
        # before it can never be the latest once that one counts.
        self._recent: deque[tuple[float, datetime]] = deque()
        self._settled: datetime | None = None

    def saw(self, accepted_at: datetime) -> None:
        if self._settled is not None and accepted_at <= self._settled:
            return
        if self._recent and accepted_at <= self._recent[-1][1]:
            return
        self._recent.append((self._clock(), accepted_at))

    def accepted_since_grace(self) -> datetime | None:
        """The latest SES acceptance time whose Send event arrived `grace` seconds ago or more."""
        cutoff = self._clock() - self._grace
        while self._recent and self._recent[0][0] <= cutoff:
            self._settled = self._recent.popleft()[1]
        return self._settled


class SenderService:
    def __init__(
        self,
        *,
        ses: Provider,
        simulator: Provider,
        in_doubt_seconds: float,
        in_doubt_recheck_seconds: float = 15.0,
        in_doubt_grace_seconds: float = 0.0,
        attempt_max_seconds: float = 35.0,
        send_events: SendEventProgress | None = None,
    ) -> None:
        self._ses = ses
        self._simulator = simulator
        self._in_doubt_seconds = in_doubt_seconds
        self._recheck = in_doubt_recheck_seconds
        # 0 = no early resend: every in-doubt send waits `in_doubt_seconds`.
        self._grace = in_doubt_grace_seconds
        # The longest an SES call can take (connect + read timeout): SES cannot accept this
        # attempt's request later than its start plus this.
        self._attempt_max = timedelta(seconds=attempt_max_seconds)
        self.send_events = send_events or SendEventProgress(in_doubt_grace_seconds)

    def _send_event_overdue(self, row: repository.Delivery) -> bool:
        """Send events are flowing and this attempt's is overdue (see the module docstring)."""
        if self._grace <= 0 or row.resent_early or row.attempt_started_at is None:
            return False
        progress = self.send_events.accepted_since_grace()
        return progress is not None and progress > row.attempt_started_at + self._attempt_max

    # ------------------------------------------------------------------ step 0: build (no I/O)

    def prepare(self, email: EmailQueued) -> Prepared:
        try:
            return Prepared(raw=build_message(email), recipients=recipients(email))
        except MessageBuildError as exc:
            return Prepared(raw=b"", recipients=[], error=exc)

    # ------------------------------------------------------------------ step 1: TX1

    async def begin(
        self,
        conn: Conn,
        email: EmailQueued,
        prepared: Prepared,
        *,
        from_queue: bool = False,
        stored: EmailQueued | None = None,
    ) -> Begin:
        """`from_queue`: the sender's own queue (held.py) runs this email, not its JetStream message.
        `stored`: the event to keep if the email is held (the published one, e.g. with the content
        reference rather than the fetched content)."""
        # issue 23: the tenant's status first, share-locked: a status change waits for this decision
        # (and this one for it), so an email is either started before a pause (sent) or held after.
        # issue 15: read and locked by the claim statement itself (tenant, then delivery row).
        locked = await repository.insert_and_lock(
            conn,
            email_id=email.email_id,
            tenant_id=email.tenant_id,
            mode=email.mode,
            recipients=prepared.recipients,
            in_doubt_seconds=self._in_doubt_seconds,
        )
        row = locked.delivery
        if row.state in ("sent", "failed"):
            return Settled(state=row.state, provider_message_id=row.provider_message_id)
        if row.queued and not from_queue:
            return Held(state=row.state)
        if prepared.error is not None:
            await self._fail(conn, email, prepared.error)
            return Refused(reason=prepared.error.reason, message=prepared.error.message)
        resent = early = False
        # The simulator has no side effect outside this database, so a test-mode attempt cut
        # short by a crash is simply run again; only a live send can be in doubt.
        if row.state == "sending" and email.mode == "live":
            remaining = locked.in_doubt_remaining if locked.in_doubt_remaining is not None else 0.0
            early = remaining > 0 and self._send_event_overdue(row)
            if remaining > 0 and not early:
                return InDoubt(remaining=remaining, recheck_in=min(remaining, self._recheck))
            log.warning(
                "email.resend_after_doubt",
                detail=(
                    "in-doubt send's SES Send event overdue while later sends' arrived; sending again"
                    if early
                    else "in-doubt send not settled by an SES Send event in time; sending again"
                )
                + " (at-least-once fallback)",
                reason="send_event_overdue" if early else "in_doubt_timeout",
                email_id=email.email_id,
                attempts=row.attempts,
                attempt_started_at=str(row.attempt_started_at),
                in_doubt_seconds=self._in_doubt_seconds,
            )
            resent = True
        held = await self._tenant_gate(conn, email, locked.tenant_status, from_queue=from_queue, stored=stored)
        if held is not None:
            return held
        attempt, started_at = await repository.start_attempt_at(
            conn, email.email_id, provider=self.provider_name(email), early_resend=early
        )
        return Proceed(attempt=attempt, resent_after_doubt=resent, started_at=started_at)

    async def _tenant_gate(
        self, conn: Conn, email: EmailQueued, status: str, *, from_queue: bool, stored: EmailQueued | None
    ) -> Begin | None:
        """issue 23: blocked → failed (`tenant_blocked`); paused → held; active → None (go on).
        After the in-doubt check: an attempt SES may have is never failed or held in doubt."""
        if status == "blocked":
            error = SenderError("the tenant is blocked", reason=TENANT_BLOCKED)
            await self._fail(conn, email, error)
            return Refused(reason=error.reason, message=error.message)
        if status == "paused":
            payload = None if from_queue else msgspec.json.encode(stored or email)
            await repository.hold(conn, email.email_id, queued_event=payload, stream=email.stream)
            return Held(state="held")
        return None

    async def defer(
        self, conn: Conn, email: EmailQueued, attempt: int, *, stored: EmailQueued | None, delay_seconds: float
    ) -> bool:
        """issue 23: the governor held this attempt before SES (daily quota near, no token in time):
        → held in the sender's queue, due again after `delay_seconds`."""
        return await repository.defer(
            conn,
            email.email_id,
            attempt=attempt,
            queued_event=msgspec.json.encode(stored or email),
            delay_seconds=delay_seconds,
            stream=email.stream,
        )

    async def apply_tenant(self, conn: Conn, event: TenantUpdated) -> int | None:
        """The tenant read model takes `event` unless it holds a later state (None: stale, ignored).
        `blocked` fails every held email of the tenant here, in the same transaction; queued ones
        still to come fail as they are consumed. Returns how many held emails were failed."""
        applied = await repository.apply_tenant(
            conn,
            tenant_id=event.tenant_id,
            status=event.status,
            status_reason=event.status_reason,
            updated_at=event.updated_at,
        )
        if not applied:
            return None
        if event.status != "blocked":
            return 0
        rows = await repository.lock_held_of_tenant(conn, event.tenant_id)
        for row in rows:
            await repository.mark_failed(conn, row.email_id, reason=TENANT_BLOCKED)
            await self._publish(
                conn,
                EmailFailed(
                    event_id=new_id("evt"),
                    occurred_at=_now(),
                    tenant_id=row.tenant_id,
                    email_id=row.email_id,
                    mode="test" if row.mode == "test" else "live",
                    reason=TENANT_BLOCKED,
                    message="the tenant is blocked",
                ),
            )
        return len(rows)

    # ------------------------------------------------------------------ step 2: provider (no transaction)

    def provider_name(self, email: EmailQueued) -> str:
        return "simulator" if email.mode == "test" else "ses"

    async def send(self, email: EmailQueued, prepared: Prepared) -> SendResult:
        provider = self._simulator if email.mode == "test" else self._ses
        return await provider.send(email, prepared.raw)

    # ------------------------------------------------------------------ step 3: TX2

    async def record_sent_at_once(
        self, conn: Conn, email: EmailQueued, result: SendResult, *, started_at: datetime, recipients: list[str]
    ) -> bool:
        """issue 15: `record_sent` in ONE statement (the caller's autocommit connection), for the
        attempt that started at `started_at` with the envelope `recipients` (TX1's): the row → sent
        and its events into the outbox, only if nothing settled it first. False: nothing was written
        (then `record_sent` in a transaction says how it was settled)."""
        events: list[Event] = [self._sent_event(email, result, occurred_at=started_at, recipients=recipients)]
        events += self._outcome_events(email, result)
        return await repository.mark_sent_with_events(
            conn,
            email.email_id,
            provider=result.provider,
            provider_message_id=result.message_id,
            outbox_rows=[(e.event_id, subject_for(e), encode(e)) for e in events],
            channel=channel(SCHEMA),
        )

    @staticmethod
    def _sent_event(
        email: EmailQueued, result: SendResult, *, occurred_at: datetime, recipients: list[str]
    ) -> EmailSent:
        return EmailSent(
            event_id=new_id("evt"),
            # "sent" is the moment the message was handed to the provider, so it sorts
            # before the provider's own events (delivery can be reported before TX2 commits).
            occurred_at=occurred_at,
            tenant_id=email.tenant_id,
            email_id=email.email_id,
            mode=email.mode,
            provider=result.provider,
            provider_message_id=result.message_id,
            recipients=list(recipients),
        )

    async def record_sent(self, conn: Conn, email: EmailQueued, result: SendResult) -> bool:
        """sending → sent + EmailSent (+ simulated outcomes). False if something settled it first."""
        row = await repository.mark_sent_unless_settled(
            conn, email.email_id, provider=result.provider, provider_message_id=result.message_id
        )
        if row is None:  # settled first (by the Send event, say): look at how
            locked = await repository.lock(conn, email.email_id)
            if locked is None:
                raise LookupError(email.email_id)
            settled = locked.delivery
            if settled.state == "failed" or settled.provider_message_id != result.message_id:
                log.warning(
                    "email.accepted_after_settled",
                    email_id=email.email_id,
                    state=settled.state,
                    provider_message_id=result.message_id,
                    settled_provider_message_id=settled.provider_message_id,
                )
            return False
        await self._publish(
            conn,
            self._sent_event(email, result, occurred_at=row.attempt_started_at or _now(), recipients=row.recipients),
        )
        for event in self._outcome_events(email, result):
            await self._publish(conn, event)
        return True

    async def record_failed(self, conn: Conn, email: EmailQueued, error: SenderError) -> bool:
        """→ failed + EmailFailed, unless already settled."""
        locked = await repository.lock(conn, email.email_id)
        if locked is None:
            raise LookupError(email.email_id)
        if locked.delivery.state in ("sent", "failed"):
            return False
        await self._fail(conn, email, error)
        return True

    async def release(self, conn: Conn, email: EmailQueued, attempt: int, error: SenderError) -> bool:
        """A transient failure: the provider certainly did not take it; back to pending."""
        return await repository.release_attempt(conn, email.email_id, attempt=attempt, reason=error.message[:500])

    # ------------------------------------------------------------------ step 4: SES Send event

    async def settle_accepted(self, conn: Conn, event: EmailProviderAccepted) -> bool:
        """SES says it took the message: settle an attempt still in flight/in doubt. False = nothing to do."""
        return event.email_id in await self.settle_accepted_many(conn, [event])

    async def settle_accepted_many(self, conn: Conn, events: Sequence[EmailProviderAccepted]) -> set[str]:
        """issue 15: the Send events of one fetch in the caller's transaction: one statement finds and
        locks the rows they settle (an attempt in flight or in doubt), and only those are written.
        Returns the email ids settled here (an email's first event in `events` settles it; a later
        one, an unknown email or one settled already changes nothing)."""
        first: dict[str, EmailProviderAccepted] = {}
        for event in events:
            self.send_events.saw(event.occurred_at)
            first.setdefault(event.email_id, event)
        settled: set[str] = set()
        # `pending`/`held` after an attempt means a failure we classified as "certainly not sent";
        # SES says otherwise, and it knows: settle it so it is not sent again (lock_unsettled).
        for row in await repository.lock_unsettled(conn, sorted(first)):
            event = first[row.email_id]
            await repository.mark_sent(
                conn, event.email_id, provider="ses", provider_message_id=event.provider_message_id
            )
            await self._publish(
                conn,
                EmailSent(
                    event_id=new_id("evt"),
                    occurred_at=event.occurred_at,  # SES's Send event time
                    tenant_id=row.tenant_id,
                    email_id=row.email_id,
                    mode="test" if row.mode == "test" else "live",
                    provider="ses",
                    provider_message_id=event.provider_message_id,
                    recipients=list(row.recipients),
                ),
            )
            settled.add(row.email_id)
        return settled

    # ------------------------------------------------------------------ internals

    async def _fail(self, conn: Conn, email: EmailQueued, error: SenderError) -> None:
        await repository.mark_failed(conn, email.email_id, reason=error.reason)
        await self._publish(
            conn,
            EmailFailed(
                event_id=new_id("evt"),
                occurred_at=_now(),
                tenant_id=email.tenant_id,
                email_id=email.email_id,
                mode=email.mode,
                reason=error.reason,
                message=error.message[:1000],
            ),
        )

    async def _publish(self, conn: Conn, event: Event) -> None:
        await add_to_outbox(conn, event, schema=SCHEMA)

    def _outcome_events(self, email: EmailQueued, result: SendResult) -> list[Event]:
        events: list[Event] = []
        common: dict[str, Any] = {
            "tenant_id": email.tenant_id,
            "email_id": email.email_id,
            "mode": email.mode,
            "provider_message_id": result.message_id,
        }
        for outcome in result.outcomes:
            if outcome.kind == "delivered":
                events.append(
                    EmailDelivered(
                        event_id=new_id("evt"),
                        occurred_at=_now(),
                        recipients=list(outcome.recipients),
                        smtp_response=outcome.smtp_response,
                        **common,
                    )
                )
            elif outcome.kind == "bounced":
                events.append(
                    EmailBounced(
                        event_id=new_id("evt"),
                        occurred_at=_now(),
                        recipients=list(outcome.recipients),
                        bounce_type=outcome.bounce_type,
                        bounce_subtype=outcome.bounce_subtype,
                        diagnostic_code=outcome.diagnostic_code,
                        **common,
                    )
                )
            else:
                events.append(
                    EmailComplained(
                        event_id=new_id("evt"),
                        occurred_at=_now(),
                        recipients=list(outcome.recipients),
                        feedback_type=outcome.feedback_type,
                        **common,
                    )
                )
        return events
