"""The email log projector (durable consumer `api-email-log`): the lifecycle events of one fetch
are applied in one transaction with their inbox rows (the kit's batch mode), so a redelivery is
a no-op; status moves only forward, per recipient and per email (see `status`).

Per batch, whatever its size: one SELECT … FOR UPDATE of the emails, one SELECT of their
recipients, one inbox claim, one timeline INSERT, one UPDATE of the recipients whose status changed
and one of the emails (which also adds the batch's new opens and clicks to its counters), then
one read and one upsert of the stats rollups (stats/service.record); and, only for a tenant with a
newly recorded live hard bounce or complaint, the reputation guard's read of the tenant and of its
window (reputation/guard.py), which may pause it. The events
of one email are folded in delivery (stream) order, as applying them one after the other would; an
event whose email is not in the log yet claims nothing and is retried."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from mailroom_contracts import events
from mailroom_contracts.streams import API_EMAIL_LOG
from mailroom_kit.consumer import BatchItem, backoff, consume_batches
from mailroom_kit.db import Conn
from mailroom_kit.inbox import claim_many
from mailroom_kit.runtime import Runtime

from mailroom_api.emails import repository as repo
from mailroom_api.emails.status import EVENT_STATUS, advance
from mailroom_api.reputation.guard import guard
from mailroom_api.reputation.policy import ReputationDefaults
from mailroom_api.settings import ApiSettings
from mailroom_api.stats import service as stats

_COMMON_FIELDS = ("type", "event_id", "occurred_at", "tenant_id", "email_id", "mode")

Result = Literal["applied", "unchanged", "duplicate", "not_yet_known"]

# --- opens and clicks (issue 22): not statuses; a timeline entry each and a count per email.
ENGAGEMENT_TYPES: dict[type[events.EmailEvent], str] = {
    events.EmailOpened: "opened",
    events.EmailClicked: "clicked",
    events.EmailUnsubscribed: "unsubscribed",  # and a suppression per recipient (below)
    # Recipients dropped at accept (the accept wrote their `suppressed` status already): a timeline
    # entry naming them and the reasons, once (its event id is the entry's id).
    events.EmailSuppressed: "suppressed",
}
# --- end opens and clicks


def _timeline_data(event: events.EmailEvent) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(event)
    for common in _COMMON_FIELDS:
        data.pop(common, None)
    return data


class _EmailState:
    """One locked email while its events are folded: status, recipients, latest event time."""

    __slots__ = ("clicks", "last_event_at", "opens", "recipients", "start", "status", "touched")

    def __init__(self, status: str) -> None:
        self.status = status
        self.opens = 0  # new in this batch (opens and clicks, issue 22)
        self.clicks = 0
        self.start: dict[int, str] = {}
        self.recipients: dict[int, tuple[str, str]] = {}  # position → (lowercased address, status)
        self.last_event_at: datetime | None = None
        self.touched = False

    def apply(self, event: events.EmailEvent, new_status: str) -> None:
        targets = {r.lower() for r in getattr(event, "recipients", [])}
        for position, (address, status) in self.recipients.items():
            if not targets or address in targets:
                self.recipients[position] = (address, advance(status, new_status))
        self.status = advance(self.status, new_status)
        self.last_event_at = (
            event.occurred_at if self.last_event_at is None else max(self.last_event_at, event.occurred_at)
        )
        self.touched = True

    # --- opens and clicks (issue 22)
    def count(self, event: events.EmailEvent) -> None:
        """A newly recorded open or click: counted, and it is the email's latest event; no status."""
        if isinstance(event, events.EmailOpened):
            self.opens += 1
        elif isinstance(event, events.EmailClicked):
            self.clicks += 1
        self.last_event_at = (
            event.occurred_at if self.last_event_at is None else max(self.last_event_at, event.occurred_at)
        )
        self.touched = True

    # --- end opens and clicks


async def apply_email_events(
    conn: Conn,
    batch: Sequence[events.EmailEvent],
    *,
    soft_bounce_suppress_after: int = 0,
    reputation: ReputationDefaults | None = None,
) -> list[Result]:
    """Project lifecycle events (in delivery order) into the email log inside the caller's
    transaction. Returns each event's result: applied | unchanged (its timeline entry was already
    recorded, or its type has no status) | duplicate (the inbox has it, or it came twice in the
    batch) | not_yet_known (its email is not in the log: nothing was written for it)."""
    emails = {row.id: _EmailState(row.status) for row in await repo.lock_emails(conn, [e.email_id for e in batch])}
    for recipient in await repo.get_recipients_of(conn, list(emails)):
        state = emails[recipient.email_id]
        state.recipients[recipient.position] = (recipient.address.lower(), recipient.status)
        state.start[recipient.position] = recipient.status
    results: list[Result] = ["not_yet_known"] * len(batch)
    known = [i for i, e in enumerate(batch) if e.email_id in emails]
    claimed = await claim_many(conn, API_EMAIL_LOG.durable, [batch[i].event_id for i in known])
    entries: list[repo.TimelineInsert] = []
    for i in known:
        event = batch[i]
        new_status = EVENT_STATUS.get(type(event)) or ENGAGEMENT_TYPES.get(type(event))  # opens and clicks
        if event.event_id not in claimed:
            results[i] = "duplicate"
            continue
        claimed.discard(event.event_id)  # the same id again later in the batch is a duplicate
        results[i] = "unchanged"
        if new_status is not None:
            entries.append(
                repo.TimelineInsert(
                    event_id=event.event_id,
                    email_id=event.email_id,
                    type=new_status,
                    occurred_at=event.occurred_at,
                    data=_timeline_data(event),
                )
            )
    recorded = await repo.insert_timeline_events(conn, entries)
    for i in known:
        event = batch[i]
        if results[i] == "unchanged" and event.event_id in recorded:
            recorded.discard(event.event_id)
            if type(event) in ENGAGEMENT_TYPES:  # opens, clicks and unsubscribes
                emails[event.email_id].count(event)
            else:
                emails[event.email_id].apply(event, EVENT_STATUS[type(event)])
            results[i] = "applied"
    recipient_updates: list[tuple[str, int, str]] = []
    email_updates: list[repo.EmailUpdate] = []
    for email_id, state in emails.items():
        if not state.touched or state.last_event_at is None:
            continue
        email_updates.append(
            repo.EmailUpdate(
                id=email_id,
                status=state.status,
                last_event_at=state.last_event_at,
                opens=state.opens,
                clicks=state.clicks,
            )
        )
        recipient_updates.extend(
            (email_id, position, status)
            for position, (_address, status) in state.recipients.items()
            if status != state.start[position]
        )
    await repo.update_recipient_statuses(conn, recipient_updates)
    await repo.update_email_statuses(conn, email_updates)
    # --- suppressions (issue 22): hard bounces, complaints and SES opt-outs put their recipients on the list
    await repo.add_suppressions(
        conn, _suppressions([e for e, r in zip(batch, results, strict=True) if r in ("applied", "unchanged")])
    )
    # --- end suppressions
    # --- soft bounces in a row (issue 22): only the events recorded now count, so a redelivery adds nothing
    if soft_bounce_suppress_after > 0:
        await repo.fold_soft_bounces(
            conn,
            _soft_bounce_folds([e for e, r in zip(batch, results, strict=True) if r == "applied"]),
            threshold=soft_bounce_suppress_after,
        )
    # --- end soft bounces
    # --- stats (issue 22): the events recorded now (so a redelivery counts nothing), after the counters
    await stats.record(conn, [e for e, r in zip(batch, results, strict=True) if r == "applied"])
    # --- end stats
    # --- the reputation guard (issue 22): judged only on a newly recorded live hard bounce or
    # complaint, after the recipients' statuses above (the window sees this batch)
    if reputation is not None:
        await guard(conn, [e for e, r in zip(batch, results, strict=True) if r == "applied"], reputation)
    # --- end the reputation guard
    return results


def _soft_bounce_folds(applied: Sequence[events.EmailEvent]) -> list[repo.SoftBounceFold]:
    """Per (tenant, mode, address), what this batch's newly recorded events did to its run of soft
    bounces, in stream order: a transient bounce adds one, a delivery resets it. Permanent and
    undetermined bounces leave it alone (a hard bounce suppresses by itself)."""
    runs: dict[tuple[str, str, str], list[Any]] = {}  # key → [reset, added, last email id]
    for event in applied:
        if isinstance(event, events.EmailBounced) and event.bounce_type == "Transient":
            bounced = True
        elif isinstance(event, events.EmailDelivered):
            bounced = False
        else:
            continue
        for recipient in event.recipients:
            run = runs.setdefault((event.tenant_id, event.mode, recipient.lower()), [False, 0, None])
            if bounced:
                run[1] += 1
                run[2] = event.email_id
            else:
                run[:] = [True, 0, None]
    return [
        repo.SoftBounceFold(tenant_id=t, mode=m, email=a, reset=reset, added=added, last_email_id=last)
        for (t, m, a), (reset, added, last) in runs.items()
    ]


def _suppressions(handled: Sequence[events.EmailEvent]) -> list[tuple[str, str, str, str, str]]:
    """(tenant, mode, address, reason, email id) to suppress: every recipient of a permanent bounce
    (`OnAccountSuppressionList` included), a complaint or an SES unsubscribe; transient and undetermined bounces
    suppress nothing. Idempotent: the list keeps an address's first entry."""
    entries: list[tuple[str, str, str, str, str]] = []
    for event in handled:
        if isinstance(event, events.EmailBounced) and event.bounce_type == "Permanent":
            reason = "bounce"
        elif isinstance(event, events.EmailComplained):
            reason = "complaint"
        elif isinstance(event, events.EmailUnsubscribed):  # an SES Subscription opt-out
            reason = "unsubscribe"
        else:
            continue
        entries.extend((event.tenant_id, event.mode, r.lower(), reason, event.email_id) for r in event.recipients)
    return entries


async def project_email_events(rt: Runtime[ApiSettings], items: list[BatchItem]) -> None:
    """The batch handler: one transaction for every lifecycle event of the fetch."""
    lifecycle: list[BatchItem] = []
    for item in items:
        if isinstance(item.event, events.EmailEvent):
            lifecycle.append(item)
        else:
            # The consumer follows lifecycle subjects only; anything else there is a bug upstream.
            item.permanent(f"{type(item.event).__name__} is not an email lifecycle event")
    if not lifecycle:
        return
    batch = [item.event for item in lifecycle if isinstance(item.event, events.EmailEvent)]
    async with rt.pool.connection() as conn, conn.transaction():
        results = await apply_email_events(
            conn,
            batch,
            soft_bounce_suppress_after=rt.settings.soft_bounce_suppress_after,
            reputation=rt.settings.reputation,
        )
    for item, result in zip(lifecycle, results, strict=True):
        if result == "not_yet_known":
            # The EmailQueued transaction is committed before its event is published, so this is
            # a lagging read or an email of another installation: try again soon, then less and
            # less often; after the consumer's max_deliveries (about an hour) it is a dead letter.
            item.retry("email not in the log yet", delay=max(2.0, backoff(item.delivery)))
        else:
            item.note(result=result)


async def email_log_worker(rt: Runtime[ApiSettings]) -> None:
    async def handle(items: list[BatchItem]) -> None:
        await project_email_events(rt, items)

    await consume_batches(rt.js, API_EMAIL_LOG, handle, stop=rt.stop)
