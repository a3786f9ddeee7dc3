"""Every SQL statement of the events service."""

from __future__ import annotations

from datetime import datetime

from mailroom_kit.db import Conn


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
) -> bool:
    """Insert the SNS message id with what SES reported in it (one statement); False if it was
    seen before (duplicate delivery: nothing is written)."""
    cur = await conn.execute(
        "INSERT INTO sns_messages (message_id, topic_arn, type, ses_event_type, ses_message_id, email_id, tenant_id, "
        "events_emitted) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (message_id) DO NOTHING",
        (message_id, topic_arn, type_, ses_event_type, ses_message_id, email_id, tenant_id, events_emitted),
    )
    return cur.rowcount == 1


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
