"""Every SQL statement on the email log: `emails`, `email_recipients` and `email_events`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one
from psycopg.types.json import Jsonb


class EmailRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    api_key_id: str
    mode: str
    from_address: str  # as given, e.g. "Acme <noreply@mail.acme.com>"
    from_domain: str
    to_addresses: list[str]
    cc_addresses: list[str]
    bcc_addresses: list[str]
    reply_to: list[str]
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    tags: dict[str, str]
    metadata: dict[str, Any] | None
    status: str
    created_at: datetime
    last_event_at: datetime


class LockedEmail(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    status: str
    last_event_at: datetime


class RecipientRow(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    address: str
    type: str
    status: str


class TimelineRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


COLUMNS = columns(EmailRow)
_JSON_COLUMNS = ("to_addresses", "cc_addresses", "bcc_addresses", "reply_to", "headers", "tags")


# The accept statement's column casts (its values come from a SELECT, so nothing else types them).
_ACCEPT_TYPES = {
    **dict.fromkeys(EmailRow.__struct_fields__, "text"),
    **dict.fromkeys(_JSON_COLUMNS, "jsonb"),
    "metadata": "jsonb",
    "created_at": "timestamptz",
    "last_event_at": "timestamptz",
}
_ACCEPT = f"""
WITH allowed AS (
    SELECT
        (%(key_domain_id)s::text IS NULL OR EXISTS (
            SELECT 1 FROM domains
            WHERE tenant_id = %(tenant_id)s AND id = %(key_domain_id)s AND lower(name) = %(from_domain)s
        )) AS domain_allowed,
        (NOT %(needs_verified)s::boolean OR EXISTS (
            SELECT 1 FROM domains
            WHERE tenant_id = %(tenant_id)s AND lower(name) = %(from_domain)s AND status = 'verified'
        )) AS domain_verified
), email AS (
    INSERT INTO emails ({COLUMNS})
    SELECT {", ".join(f"%({name})s::{kind}" for name, kind in _ACCEPT_TYPES.items())}
    FROM allowed WHERE domain_allowed AND domain_verified
    RETURNING id
), recipients AS (
    INSERT INTO email_recipients (email_id, position, address, type, status)
    SELECT email.id, r.n - 1, r.address, r.type, %(status)s::text
    FROM email, ROWS FROM (jsonb_to_recordset(%(recipients)s::jsonb) AS (address text, type text))
        WITH ORDINALITY AS r (address, type, n)
), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT %(event_id)s::text, email.id, 'queued', %(created_at)s::timestamptz, '{{}}' FROM email
), queued AS (
    INSERT INTO outbox (event_id, subject, payload)
    SELECT %(event_id)s::text, %(outbox_subject)s::text, %(payload)s::bytea FROM email
    ON CONFLICT (event_id) DO NOTHING
)
SELECT domain_allowed, domain_verified FROM allowed
"""


class Acceptance(msgspec.Struct, frozen=True, kw_only=True):
    domain_allowed: bool  # False: the key is limited to another domain (nothing was written)
    domain_verified: bool  # False: a live key and no verified domain of that name (nothing was written)


async def accept_email(
    conn: Conn,
    email: EmailRow,
    *,
    recipients: list[tuple[str, str]],
    key_domain_id: str | None,
    needs_verified_domain: bool,
    event_id: str,
    outbox_subject: str,
    payload: bytes,
    schedule: ScheduledAccept | None = None,
) -> Acceptance:
    """Accept an email in ONE statement, atomic by itself: check the from-domain (the key's own
    domain if it is limited to one; a verified domain of the tenant if `needs_verified_domain`),
    and only if both hold write the email, its `recipients` ((address, type) in order) with the
    email's status, the `queued` timeline entry (`event_id`) and the outbox row (`outbox_subject`,
    `payload`). No NOTIFY here: it would serialize the commits (see emails/relay_wake.py).
    With `schedule` the EmailQueued row waits in `outbox_scheduled` instead (see `_ACCEPT_SCHEDULED`)."""
    params: dict[str, Any] = msgspec.structs.asdict(email)
    for name in (*_JSON_COLUMNS, "metadata"):
        value = params[name]
        params[name] = None if value is None else msgspec.json.encode(value).decode()
    params.update(
        key_domain_id=key_domain_id,
        needs_verified=needs_verified_domain,
        # One JSON text, not two arrays: psycopg dumps a str without inspecting it.
        recipients=msgspec.json.encode([{"address": a, "type": t} for a, t in recipients]).decode(),
        event_id=event_id,
        outbox_subject=outbox_subject,
        payload=payload,
    )
    if schedule is not None:
        params.update(msgspec.structs.asdict(schedule))
    cur = await conn.execute(_ACCEPT if schedule is None else _ACCEPT_SCHEDULED, params)
    row = await cur.fetchone()
    assert row is not None  # `allowed` is always one row
    return Acceptance(domain_allowed=row["domain_allowed"], domain_verified=row["domain_verified"])


async def notify_relay(conn: Conn, channel: str) -> None:
    """Wake the outbox relays listening on `channel` (on an autocommit connection: its own transaction)."""
    await conn.execute("SELECT pg_notify(%s, '')", (channel,))


async def insert_email(conn: Conn, email: EmailRow) -> None:
    params = msgspec.structs.asdict(email)
    for name in _JSON_COLUMNS:
        params[name] = Jsonb(params[name])
    params["metadata"] = Jsonb(email.metadata) if email.metadata is not None else None
    values = ", ".join(f"%({name})s" for name in EmailRow.__struct_fields__)
    await conn.execute(f"INSERT INTO emails ({COLUMNS}) VALUES ({values})", params)


async def insert_recipients(conn: Conn, email_id: str, recipients: list[tuple[str, str]], status: str) -> None:
    """`recipients`: (address, type) in order."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO email_recipients (email_id, position, address, type, status) VALUES (%s, %s, %s, %s, %s)",
            [(email_id, i, address, kind, status) for i, (address, kind) in enumerate(recipients)],
        )


async def insert_timeline_event(
    conn: Conn, *, event_id: str, email_id: str, type_: str, occurred_at: datetime, data: dict[str, Any]
) -> bool:
    """Record a timeline entry; False if this event id was already recorded (a redelivery)."""
    cur = await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (event_id, email_id, type_, occurred_at, Jsonb(data)),
    )
    return await cur.fetchone() is not None


async def get_email(conn: Conn, tenant_id: str, mode: str, email_id: str) -> EmailRow | None:
    return await fetch_one(
        conn,
        EmailRow,
        f"SELECT {COLUMNS} FROM emails WHERE id = %s AND tenant_id = %s AND mode = %s",
        (email_id, tenant_id, mode),
    )


async def lock_email(conn: Conn, email_id: str) -> LockedEmail | None:
    """SELECT … FOR UPDATE: the projector applies one email's events one after the other."""
    return await fetch_one(
        conn,
        LockedEmail,
        f"SELECT {columns(LockedEmail)} FROM emails WHERE id = %s FOR UPDATE",
        (email_id,),
    )


async def update_email_status(conn: Conn, email_id: str, status: str, last_event_at: datetime) -> None:
    await conn.execute(
        "UPDATE emails SET status = %s, last_event_at = greatest(last_event_at, %s) WHERE id = %s",
        (status, last_event_at, email_id),
    )


async def get_recipients(conn: Conn, email_id: str) -> list[RecipientRow]:
    return await fetch_all(
        conn,
        RecipientRow,
        f"SELECT {columns(RecipientRow)} FROM email_recipients WHERE email_id = %s ORDER BY position",
        (email_id,),
    )


async def update_recipient_status(conn: Conn, email_id: str, position: int, status: str) -> None:
    await conn.execute(
        "UPDATE email_recipients SET status = %s, updated_at = now() WHERE email_id = %s AND position = %s",
        (status, email_id, position),
    )


async def get_timeline(conn: Conn, email_id: str) -> list[TimelineRow]:
    return await fetch_all(
        conn,
        TimelineRow,
        f"SELECT {columns(TimelineRow)} FROM email_events WHERE email_id = %s ORDER BY occurred_at, recorded_at",
        (email_id,),
    )


async def list_emails(
    conn: Conn,
    *,
    tenant_id: str,
    mode: str,
    limit: int,
    before_id: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    to: str | None = None,
    tag: dict[str, str] | None = None,
    domain: str | None = None,
) -> list[EmailRow]:
    """Newest first; keyset pagination on the (time-sortable) id."""
    return await fetch_all(
        conn,
        EmailRow,
        f"""
        SELECT {COLUMNS} FROM emails
        WHERE tenant_id = %(tenant_id)s AND mode = %(mode)s
          AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
          AND (%(status)s::text IS NULL OR status = %(status)s)
          AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
          AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
          AND (%(domain)s::text IS NULL OR from_domain = lower(%(domain)s))
          AND (%(tag)s::jsonb IS NULL OR tags @> %(tag)s::jsonb)
          AND (%(to)s::text IS NULL OR EXISTS (
                SELECT 1 FROM email_recipients r
                WHERE r.email_id = emails.id AND lower(r.address) = lower(%(to)s)))
        ORDER BY id DESC
        LIMIT %(limit)s
        """,
        {
            "tenant_id": tenant_id,
            "mode": mode,
            "before_id": before_id,
            "status": status,
            "created_after": created_after,
            "created_before": created_before,
            "to": to,
            "tag": Jsonb(tag) if tag is not None else None,
            "domain": domain,
            "limit": limit,
        },
    )


# ----------------------------------------------------------------------------- projector (batches)


async def lock_emails(conn: Conn, email_ids: list[str]) -> list[LockedEmail]:
    """`lock_email` for a batch: SELECT … FOR UPDATE in id order, so two batches that share emails
    lock them in the same order and cannot deadlock."""
    return await fetch_all(
        conn,
        LockedEmail,
        f"SELECT {columns(LockedEmail)} FROM emails WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
        (sorted(set(email_ids)),),
    )


class EmailRecipient(msgspec.Struct, frozen=True, kw_only=True):
    email_id: str
    position: int
    address: str
    status: str


async def get_recipients_of(conn: Conn, email_ids: list[str]) -> list[EmailRecipient]:
    """The recipients of `email_ids`. Read after `lock_emails`, in a statement of its own: its
    snapshot then includes what the previous holder of those locks committed (a join in the
    locking statement would read the recipients as they were before it waited)."""
    return await fetch_all(
        conn,
        EmailRecipient,
        f"SELECT {columns(EmailRecipient)} FROM email_recipients WHERE email_id = ANY(%s) ORDER BY email_id, position",
        (sorted(set(email_ids)),),
    )


class TimelineInsert(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    email_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


async def insert_timeline_events(conn: Conn, entries: list[TimelineInsert]) -> set[str]:
    """Record timeline entries in one statement; returns the event ids that were new (the others
    were recorded before: redeliveries)."""
    if not entries:
        return set()
    cur = await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::jsonb[])"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (
            [e.event_id for e in entries],
            [e.email_id for e in entries],
            [e.type for e in entries],
            [e.occurred_at for e in entries],
            [Jsonb(e.data) for e in entries],
        ),
    )
    return {row["id"] for row in await cur.fetchall()}


async def update_recipient_statuses(conn: Conn, updates: list[tuple[str, int, str]]) -> None:
    """`updates`: (email_id, position, status), in one statement."""
    if not updates:
        return
    await conn.execute(
        "UPDATE email_recipients r SET status = u.status, updated_at = now()"
        " FROM unnest(%s::text[], %s::int[], %s::text[]) AS u(email_id, position, status)"
        " WHERE r.email_id = u.email_id AND r.position = u.position",
        ([u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates]),
    )


async def update_email_statuses(conn: Conn, updates: list[tuple[str, str, datetime]]) -> None:
    """`updates`: (email_id, status, last_event_at), in one statement; last_event_at never moves back."""
    if not updates:
        return
    await conn.execute(
        "UPDATE emails e SET status = u.status, last_event_at = greatest(e.last_event_at, u.last_event_at)"
        " FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS u(id, status, last_event_at)"
        " WHERE e.id = u.id",
        ([u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates]),
    )


# ----------------------------------------------------------------------------- scheduling
# A scheduled email's accept, cancel and reschedule (emails/scheduling.py). Its EmailQueued waits
# in the kit's `outbox_scheduled` until `scheduled_at`; the relay takes it from there.


class ScheduledAccept(msgspec.Struct, frozen=True, kw_only=True):
    """What the accept statement writes besides a plain accept's rows for a scheduled email."""

    not_before: datetime  # when the EmailQueued row may be published
    scheduled_event_id: str  # the EmailScheduled event: the `scheduled` timeline entry's id too
    scheduled_subject: str
    scheduled_payload: bytes
    scheduled_data: str  # the timeline entry's data, JSON text


# The plain accept with three changes: the timeline entry is `scheduled` (the EmailScheduled's
# id and data), the EmailQueued row goes to `outbox_scheduled` with `not_before`, and the
# EmailScheduled row goes to the immediate outbox (webhooks hear of it at once). The plain
# statement stays exactly as it was: a plain send pays nothing for scheduling.
_PLAIN_TAIL = """), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT %(event_id)s::text, email.id, 'queued', %(created_at)s::timestamptz, '{}' FROM email
), queued AS (
    INSERT INTO outbox (event_id, subject, payload)
    SELECT %(event_id)s::text, %(outbox_subject)s::text, %(payload)s::bytea FROM email
    ON CONFLICT (event_id) DO NOTHING
)"""
_SCHEDULED_TAIL = """), timeline AS (
    INSERT INTO email_events (id, email_id, type, occurred_at, data)
    SELECT %(scheduled_event_id)s::text, email.id, 'scheduled', %(created_at)s::timestamptz,
        %(scheduled_data)s::jsonb FROM email
), queued AS (
    INSERT INTO outbox_scheduled (event_id, subject, payload, not_before)
    SELECT %(event_id)s::text, %(outbox_subject)s::text, %(payload)s::bytea, %(not_before)s::timestamptz FROM email
    ON CONFLICT (event_id) DO NOTHING
), scheduled AS (
    INSERT INTO outbox (event_id, subject, payload)
    SELECT %(scheduled_event_id)s::text, %(scheduled_subject)s::text, %(scheduled_payload)s::bytea FROM email
    ON CONFLICT (event_id) DO NOTHING
)"""
assert _ACCEPT.count(_PLAIN_TAIL) == 1, "the accept statement changed: update _SCHEDULED_TAIL with it"
_ACCEPT_SCHEDULED = _ACCEPT.replace(_PLAIN_TAIL, _SCHEDULED_TAIL)


class ScheduleLock(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str


async def lock_email_of(conn: Conn, tenant_id: str, mode: str, email_id: str) -> ScheduleLock | None:
    """The tenant's email (of this key's mode), locked FOR UPDATE for a cancel or reschedule. Lock
    order everywhere: the outbox_scheduled row first, then the email (the relay's transaction locks
    the row, then `mark_queued` the email), so nothing waits in a cycle."""
    return await fetch_one(
        conn,
        ScheduleLock,
        "SELECT id, status FROM emails WHERE id = %s AND tenant_id = %s AND mode = %s FOR UPDATE",
        (email_id, tenant_id, mode),
    )


async def record_canceled(conn: Conn, email_id: str, *, event_id: str, occurred_at: datetime) -> None:
    """The email and every recipient `canceled`, with the `canceled` timeline entry, in one statement."""
    await conn.execute(
        """
        WITH email AS (
            UPDATE emails SET status = 'canceled', last_event_at = greatest(last_event_at, %(at)s)
            WHERE id = %(email_id)s RETURNING id
        ), recipients AS (
            UPDATE email_recipients SET status = 'canceled', updated_at = now()
            WHERE email_id IN (SELECT id FROM email)
        )
        INSERT INTO email_events (id, email_id, type, occurred_at, data)
        SELECT %(event_id)s, id, 'canceled', %(at)s, '{}' FROM email
        """,
        {"email_id": email_id, "event_id": event_id, "at": occurred_at},
    )


async def record_rescheduled(
    conn: Conn, email_id: str, *, event_id: str, occurred_at: datetime, data: dict[str, Any]
) -> None:
    """A new `scheduled` timeline entry (the reschedule's EmailScheduled) and the email's last event time."""
    await conn.execute(
        """
        WITH email AS (
            UPDATE emails SET last_event_at = greatest(last_event_at, %(at)s) WHERE id = %(email_id)s RETURNING id
        )
        INSERT INTO email_events (id, email_id, type, occurred_at, data)
        SELECT %(event_id)s, id, 'scheduled', %(at)s, %(data)s FROM email
        """,
        {"email_id": email_id, "event_id": event_id, "at": occurred_at, "data": Jsonb(data)},
    )


async def mark_queued(conn: Conn, email_ids: list[str], event_ids: list[str]) -> None:
    """Scheduled emails whose EmailQueued (`event_ids`, in the same order) was just relayed:
    `scheduled → queued` for the email and its recipients, and the `queued` timeline entry (keyed by
    the event id, so a window that is redone adds nothing). Emails first, then recipients, as
    every other writer locks them, and the emails in id order, as the projector does (two
    transactions locking the same emails in different orders could deadlock)."""
    await conn.execute(
        "UPDATE emails SET status = 'queued', last_event_at = greatest(last_event_at, now())"
        " WHERE id IN (SELECT id FROM emails WHERE id = ANY(%s) ORDER BY id FOR UPDATE) AND status = 'scheduled'",
        (sorted(email_ids),),
    )
    await conn.execute(
        "UPDATE email_recipients SET status = 'queued', updated_at = now()"
        " WHERE email_id = ANY(%s) AND status = 'scheduled'",
        (email_ids,),
    )
    await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data)"
        " SELECT u.event_id, u.email_id, 'queued', now(), '{}'"
        " FROM unnest(%s::text[], %s::text[]) AS u(event_id, email_id)"
        " JOIN emails e ON e.id = u.email_id"
        " ON CONFLICT (id) DO NOTHING",
        (event_ids, email_ids),
    )
