"""Every SQL statement of the events service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from mailroom_kit import outbox, tracing
from mailroom_kit.db import Conn, fetch_all

_RECORD = """
WITH msg AS (
    INSERT INTO sns_messages (message_id, topic_arn, type, ses_event_type, ses_message_id, email_id, tenant_id,
                              events_emitted)
    VALUES (%(message_id)s, %(topic_arn)s, %(type)s, %(ses_event_type)s, %(ses_message_id)s, %(email_id)s,
            %(tenant_id)s, %(events_emitted)s)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING 1
), added AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT e.event_id, e.subject, decode(e.payload, 'base64'), %(trace_context)s::text
    FROM msg, ROWS FROM (jsonb_to_recordset(%(outbox)s::jsonb) AS (event_id text, subject text, payload text))
        WITH ORDINALITY AS e (event_id, subject, payload, n)
    ORDER BY e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM msg) AS recorded,
       (SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') FROM added WHERE %(channel)s::text IS NOT NULL LIMIT 1)
        AS woke) AS notified
"""


# Issue 22: the statement for an SES event that matches no email also keeps it in
# `unmatched_events` (the plain statement, the one every matched event runs, is unchanged).
_TAIL = "\n)\nSELECT EXISTS (SELECT 1 FROM msg) AS recorded,"
assert _RECORD.count(_TAIL) == 1
_RECORD_UNMATCHED = _RECORD.replace(
    _TAIL,
    """
), kept AS (
    INSERT INTO unmatched_events (message_id, reason, topic_arn, ses_event_type, ses_message_id, detail, record)
    SELECT %(message_id)s, %(unmatched_reason)s, %(topic_arn)s, %(ses_event_type)s, %(ses_message_id)s,
        %(unmatched_detail)s, %(unmatched_record)s::jsonb
    FROM msg
    ON CONFLICT (message_id) DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM msg) AS recorded,""",
)


class Unmatched(msgspec.Struct, frozen=True, kw_only=True):
    """What `unmatched_events` keeps of an SES event that matches no email."""

    reason: str  # not_ours | unparseable
    detail: str | None = None
    record: str | None = None  # JSON text of the summary


async def record_message(
    conn: Conn,
    *,
    message_id: str,
    topic_arn: str,
    type_: str,
    ses_event_type: str | None = None,
    ses_message_id: str | None = None,
    email_id: str | None = None,
    tenant_id: str | None = None,
    events_emitted: int = 0,
    outbox_rows: Sequence[tuple[str, str, bytes]] = (),
    notify_channel: str | None = None,
    unmatched: Unmatched | None = None,
) -> bool:
    """Insert the SNS message id with what SES reported in it and, only if it is new, the
    `outbox_rows` ((event_id, subject, payload), in order), NOTIFYing `notify_channel` on commit
    when any was written: ONE statement, so on an autocommit connection it is its own atomic
    transaction in a single round trip. False if the message was seen before (a duplicate
    delivery: nothing is written)."""
    extra = {}
    if unmatched is not None:
        extra = {
            "unmatched_reason": unmatched.reason,
            "unmatched_detail": unmatched.detail,
            "unmatched_record": unmatched.record,
        }
    cur = await conn.execute(
        _RECORD if unmatched is None else _RECORD_UNMATCHED,
        {
            **extra,
            "message_id": message_id,
            "topic_arn": topic_arn,
            "type": type_,
            "ses_event_type": ses_event_type,
            "ses_message_id": ses_message_id,
            "email_id": email_id,
            "tenant_id": tenant_id,
            "events_emitted": events_emitted,
            # One JSON text (payloads base64, decoded by the statement), not three arrays: psycopg
            # dumps a list element by element in Python.
            "outbox": outbox.rows_json(outbox_rows),
            "channel": notify_channel,
            "trace_context": tracing.context_text(),  # NULL when tracing is off
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row["recorded"])


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """One SNS message to record with its outbox rows (`record_message`'s arguments, no unmatched)."""

    message_id: str
    topic_arn: str
    type: str
    ses_event_type: str | None = None
    ses_message_id: str | None = None
    email_id: str | None = None
    tenant_id: str | None = None
    events_emitted: int = 0
    outbox: list[dict[str, str | bytes]] = []  # {event_id, subject, payload}, in order (bytes: base64 in JSON)
    trace_context: str | None = None


_RECORD_MANY = """
WITH input AS MATERIALIZED (
    SELECT * FROM ROWS FROM (jsonb_to_recordset(%(records)s::jsonb) AS (
        message_id text, topic_arn text, type text, ses_event_type text, ses_message_id text, email_id text,
        tenant_id text, events_emitted int, outbox jsonb, trace_context text
    )) WITH ORDINALITY AS r
), msg AS (
    INSERT INTO sns_messages (message_id, topic_arn, type, ses_event_type, ses_message_id, email_id, tenant_id,
                              events_emitted)
    SELECT message_id, topic_arn, type, ses_event_type, ses_message_id, email_id, tenant_id, events_emitted
    FROM input ORDER BY ordinality
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
), added AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT e.event_id, e.subject, decode(e.payload, 'base64'), i.trace_context
    FROM input AS i JOIN msg ON msg.message_id = i.message_id,
        ROWS FROM (jsonb_to_recordset(i.outbox) AS (event_id text, subject text, payload text))
        WITH ORDINALITY AS e (event_id, subject, payload, n)
    ORDER BY i.ordinality, e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT coalesce(jsonb_agg(message_id), '[]'::jsonb) FROM msg) AS recorded,
       (SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') FROM added WHERE %(channel)s::text IS NOT NULL LIMIT 1)
        AS woke) AS notified
"""


async def record_messages(conn: Conn, records: list[Record], *, notify_channel: str | None) -> list[bool]:
    """`record_message` for several SNS messages in ONE statement (the group commit of
    `mailroom_events.groups`): each new MessageId is recorded with its outbox rows (in the order of
    `records`, then of each one's rows), NOTIFYing `notify_channel` once when any row was written.
    Returns, per record, whether it was recorded (False: seen before, or earlier in `records`)."""
    unique: dict[str, Record] = {}  # the first record of each MessageId, in order
    for record in records:
        unique.setdefault(record.message_id, record)
    cur = await conn.execute(
        _RECORD_MANY,
        {"records": msgspec.json.encode(list(unique.values())).decode(), "channel": notify_channel},
    )
    row = await cur.fetchone()
    assert row is not None
    recorded = set(row["recorded"])
    answers = []
    for record in records:
        answers.append(record.message_id in recorded)
        recorded.discard(record.message_id)  # the same MessageId again in the group: a duplicate
    return answers


async def record_subscription(conn: Conn, topic_arn: str) -> None:
    await conn.execute(
        "INSERT INTO subscriptions (topic_arn) VALUES (%s) ON CONFLICT (topic_arn) DO UPDATE SET confirmed_at = now()",
        (topic_arn,),
    )


async def purge_sns_messages(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` SNS message records received before `cutoff` (the retention job).
    Safe once older than the replay window: such a message is refused as a replay anyway."""
    cur = await conn.execute(
        "DELETE FROM sns_messages WHERE ctid IN"
        " (SELECT ctid FROM sns_messages WHERE received_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
    return cur.rowcount


class UnmatchedRow(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    reason: str
    topic_arn: str
    ses_event_type: str | None
    ses_message_id: str | None
    detail: str | None
    record: dict[str, Any] | None
    received_at: datetime


async def list_unmatched(
    conn: Conn, *, limit: int, reason: str | None = None, before: datetime | None = None
) -> list[UnmatchedRow]:
    """The newest `limit` unmatched events (of `reason`; received before `before`), newest first."""
    return await fetch_all(
        conn,
        UnmatchedRow,
        """
        SELECT message_id, reason, topic_arn, ses_event_type, ses_message_id, detail, record, received_at
        FROM unmatched_events
        WHERE (%(reason)s::text IS NULL OR reason = %(reason)s::text)
            AND (%(before)s::timestamptz IS NULL OR received_at < %(before)s::timestamptz)
        ORDER BY received_at DESC, message_id
        LIMIT %(limit)s
        """,
        {"reason": reason, "before": before, "limit": limit},
    )


async def purge_unmatched(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` unmatched events received before `cutoff` (the retention job)."""
    cur = await conn.execute(
        "DELETE FROM unmatched_events WHERE ctid IN"
        " (SELECT ctid FROM unmatched_events WHERE received_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
    return cur.rowcount
