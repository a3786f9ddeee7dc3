"""Scheduled emails: what a scheduled accept writes besides a plain one, and the cancel and
reschedule of an email that is still waiting for its time.

A scheduled email is accepted like any other (one statement, see repository.accept_email) with
status `scheduled`, a `scheduled` timeline entry, its EmailScheduled event in the outbox (webhooks
`email.scheduled` at once) and its EmailQueued in the kit's `outbox_scheduled` with
`not_before = scheduled_at`. The relay publishes that row when it is due (its own timer, recomputed
from the table after every window: restarts lose nothing), and the email log then moves the email
to `queued` (emails/projector.py). The EmailQueued's id is derived from the email id
(`queued_event_id`), so a cancel or reschedule finds its row without storing anything more.

The relay publishes the row when it is due and, in the same transaction that deletes it, moves
the email to `queued` (`mark_queued`, its `on_scheduled_relayed` hook): `scheduled` means exactly
"its EmailQueued has not gone out", and a plain send costs the email log nothing more.

Cancel and reschedule run in the caller's transaction: they first take the outbox_scheduled row
under the row lock the relay takes (`FOR UPDATE SKIP LOCKED` there), then the email row, the order
the relay's transaction locks them in. While a relay is publishing the row they wait for its
commit and find it gone (and the email `queued`): "sending has begun", 409. So at the due moment an
email is either sent or canceled, never both, and a reschedule never moves an email that already
went out. Another tenant's id finds no email: 404, and the transaction (which may have touched
the row) rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
from mailroom_contracts import decode, encode, events, subject_for
from mailroom_contracts.subjects import EMAIL_QUEUED
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id

from mailroom_api.auth.service import Principal
from mailroom_api.emails import repository as repo
from mailroom_api.emails.schemas import EmailSchedule
from mailroom_api.emails.validation import check_scheduled_at
from mailroom_api.errors import ApiError, not_found

SCHEMA = "api"


def queued_event_id(email_id: str) -> str:
    """The EmailQueued event id of a scheduled email: `evt_` + the email id's own 26 characters
    (unique as the email id is; an `evt_` id from `new_id` never equals it but by a 80-bit chance)."""
    return "evt_" + email_id.removeprefix("msg_")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scheduled_from_queued(queued: events.EmailQueued, *, event_id: str, occurred_at: datetime) -> events.EmailScheduled:
    """The EmailScheduled of a scheduled EmailQueued: the webhook summary (never the bodies)."""
    assert queued.scheduled_at is not None
    return events.EmailScheduled(
        event_id=event_id,
        occurred_at=occurred_at,
        tenant_id=queued.tenant_id,
        email_id=queued.email_id,
        mode=queued.mode,
        from_=queued.from_,
        to=queued.to,
        cc=queued.cc,
        bcc=queued.bcc,
        subject=queued.subject,
        tags=queued.tags,
        metadata=queued.metadata,
        created_at=queued.created_at,
        scheduled_at=queued.scheduled_at,
    )


def timeline_data(scheduled_at: datetime) -> dict[str, str]:
    return {"scheduled_at": rfc3339(scheduled_at)}


def scheduled_accept(queued: events.EmailQueued, now: datetime) -> repo.ScheduledAccept:
    """What the accept statement writes for a scheduled EmailQueued besides a plain accept's rows."""
    assert queued.scheduled_at is not None
    scheduled = scheduled_from_queued(queued, event_id=new_id("evt"), occurred_at=now)
    return repo.ScheduledAccept(
        not_before=queued.scheduled_at,
        scheduled_event_id=scheduled.event_id,
        scheduled_subject=subject_for(scheduled),
        scheduled_payload=encode(scheduled),
        scheduled_data=msgspec.json.encode(timeline_data(queued.scheduled_at)).decode(),
    )


def scheduled_at_of(timeline: list[repo.TimelineRow]) -> datetime | None:
    """When an email is (or was) due: the latest `scheduled` timeline entry's time."""
    for entry in reversed(timeline):
        if entry.type == "scheduled" and isinstance(value := entry.data.get("scheduled_at"), str):
            return datetime.fromisoformat(value)
    return None


def _conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


async def _check_scheduled(
    conn: Conn, principal: Principal, email_id: str, action: str, payload: bytes | None
) -> bytes:
    """After the outbox row was taken (`payload`, None: there is none): the tenant's email, still
    scheduled. Any refusal raises, so the caller's transaction rolls back whatever it did to the row."""
    email = await repo.lock_email_of(conn, principal.tenant_id, principal.mode, email_id)
    if email is None:
        raise not_found("email")
    if email.status != "scheduled":
        raise _conflict(f"only a scheduled email can be {action}; this one is {email.status}")
    if payload is None:  # cannot be while it is `scheduled` (the relay moves both at once)
        raise _conflict("sending has begun")
    return payload


async def mark_queued(conn: Conn, event_ids: list[str]) -> None:
    """The relay's `on_scheduled_relayed`: these scheduled EmailQueued events were published."""
    await repo.mark_queued(conn, ["msg_" + e.removeprefix("evt_") for e in event_ids], event_ids)


# --- suppressed by the due time (issue 22)
# The re-check belongs here, in the api's relay, not in the sender: the suppression list is the
# api's (the sender never reads the api schema, and asking the api per send would cost every send a
# round trip), and the relay's transaction already holds the row lock that decides between "goes
# out" and "canceled". So the due EmailQueued is looked at under that lock just before it is
# published: a recipient suppressed since the accept is dropped from it (status `suppressed`, named
# by an EmailSuppressed, webhook `email.suppressed`), and an email left with nobody is not
# published at all (status `suppressed`).


async def recheck_suppressions(conn: Conn, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The relay's `prepare_scheduled`: the due rows to publish, each EmailQueued without its
    recipients suppressed since the accept; an email whose every recipient is suppressed is left
    out (the relay deletes its row unpublished). Two reads per due window, writes only on a hit."""
    queued = {
        row["id"]: decode(bytes(row["payload"]), events.EmailQueued) for row in rows if row["subject"] == EMAIL_QUEUED
    }
    if not queued:
        return rows
    waiting: dict[str, list[repo.ScheduledRecipient]] = {}
    for recipient in await repo.lock_scheduled_recipients(conn, sorted({e.email_id for e in queued.values()})):
        waiting.setdefault(recipient.email_id, []).append(recipient)
    keys = {(e.tenant_id, e.mode, r.address.lower()) for e in queued.values() for r in waiting.get(e.email_id, [])}
    found = await repo.suppressions_of(conn, sorted(keys))
    if not found:
        return rows
    kept_rows: list[dict[str, Any]] = []
    dropped: list[tuple[str, int]] = []
    emptied: list[str] = []
    payloads: list[tuple[int, bytes]] = []
    notices: list[events.EmailSuppressed] = []
    now = datetime.now(UTC)
    for row in rows:
        event = queued.get(row["id"])
        if event is None:
            kept_rows.append(row)
            continue
        recipients = waiting.get(event.email_id, [])
        hits = {
            r.position: reason
            for r in recipients
            if (reason := found.get((event.tenant_id, event.mode, r.address.lower()))) is not None
        }
        if not hits:
            kept_rows.append(row)
            continue
        dropped += [(event.email_id, position) for position in hits]
        notices.append(
            suppressed_notice(event, [(r.address, hits[r.position]) for r in recipients if r.position in hits], now)
        )
        if len(hits) == len(recipients):
            emptied.append(event.email_id)
            continue
        lighter = _without(event, recipients, set(hits))
        payload = encode(lighter)
        payloads.append((row["id"], payload))
        kept_rows.append({**row, "payload": payload})
    await repo.record_suppressed_at_release(conn, dropped, emptied, payloads)
    for notice in notices:
        await outbox.add(conn, notice, schema=SCHEMA)
    return kept_rows


def suppressed_notice(
    event: events.EmailQueued, dropped: Iterable[tuple[str, str]], at: datetime
) -> events.EmailSuppressed:
    """The EmailSuppressed of an email's dropped recipients, `(address, reason)` pairs in recipient
    order, each address once (its first reason): at the accept (emails.service) and at release."""
    named: dict[str, str] = {}
    for address, reason in dropped:
        named.setdefault(address.lower(), reason)
    return events.EmailSuppressed(
        event_id=new_id("evt"),
        occurred_at=at,
        tenant_id=event.tenant_id,
        email_id=event.email_id,
        mode=event.mode,
        recipients=[
            events.SuppressedRecipient(email=a, reason=reason)  # type: ignore[arg-type]  # the table's CHECK
            for a, reason in named.items()
        ],
    )


def _without(
    event: events.EmailQueued, recipients: list[repo.ScheduledRecipient], gone: set[int]
) -> events.EmailQueued:
    """`event` without the recipients at positions `gone`. The event's to/cc/bcc are the still-
    scheduled recipients of each type in position order (the accept left out those it suppressed),
    in their wire form: matched by order, or by address if the two ever disagree in length."""

    def kept(kind: str, group: list[events.Address]) -> list[events.Address]:
        mine = [r for r in recipients if r.type == kind]
        if len(mine) == len(group):
            return [a for r, a in zip(mine, group, strict=True) if r.position not in gone]
        lost = {r.address.lower() for r in mine if r.position in gone}
        return [a for a in group if a.email.lower() not in lost]

    return msgspec.structs.replace(event, to=kept("to", event.to), cc=kept("cc", event.cc), bcc=kept("bcc", event.bcc))


# --- end suppressed by the due time


async def cancel_email(
    conn: Conn, principal: Principal, email_id: str
) -> tuple[EmailSchedule, events.ContentRef | None]:
    """Cancel a scheduled email that has not gone out (in the caller's transaction): its
    EmailQueued row deleted, status `canceled`, and an EmailCanceled event (webhook `email.canceled`).
    Also returns the object holding its offloaded content, if any, for the caller to delete once
    committed (nothing will ever read it)."""
    payload = await outbox.cancel_scheduled(conn, queued_event_id(email_id))
    payload = await _check_scheduled(conn, principal, email_id, "canceled", payload)
    queued = decode(payload, events.EmailQueued)
    now = datetime.now(UTC)
    canceled = events.EmailCanceled(
        event_id=new_id("evt"),
        occurred_at=now,
        tenant_id=principal.tenant_id,
        email_id=email_id,
        mode=queued.mode,
        scheduled_at=queued.scheduled_at,
    )
    await repo.record_canceled(conn, email_id, event_id=canceled.event_id, occurred_at=now)
    await outbox.add(conn, canceled, schema=SCHEMA)
    return EmailSchedule(id=email_id, status="canceled", scheduled_at=queued.scheduled_at), queued.content


async def reschedule_email(conn: Conn, principal: Principal, email_id: str, scheduled_at: datetime) -> EmailSchedule:
    """Move a scheduled email that has not gone out to `scheduled_at` (in the caller's
    transaction): its EmailQueued row gets the new time (and says so), a new `scheduled` timeline
    entry, and another EmailScheduled event (webhook `email.scheduled` with the new time)."""
    at = check_scheduled_at(scheduled_at)
    assert at is not None
    payload = await outbox.scheduled_payload(conn, queued_event_id(email_id))
    payload = await _check_scheduled(conn, principal, email_id, "rescheduled", payload)
    now = datetime.now(UTC)
    queued = decode(payload, events.EmailQueued)
    queued = msgspec.structs.replace(queued, occurred_at=max(now, at), scheduled_at=at)
    moved = await outbox.reschedule(conn, queued, schema=SCHEMA, not_before=at)
    assert moved  # the row is locked by this transaction since scheduled_payload
    scheduled = scheduled_from_queued(queued, event_id=new_id("evt"), occurred_at=now)
    await repo.record_rescheduled(conn, email_id, event_id=scheduled.event_id, occurred_at=now, data=timeline_data(at))
    await outbox.add(conn, scheduled, schema=SCHEMA)
    return EmailSchedule(id=email_id, status="scheduled", scheduled_at=at)
