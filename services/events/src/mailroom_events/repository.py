"""Every SQL statement of the events service."""

from __future__ import annotations

from mailroom_kit.db import Conn


async def record_message(conn: Conn, *, message_id: str, topic_arn: str, type_: str) -> bool:
    """Insert the SNS message id; False if it was seen before (duplicate delivery)."""
    cur = await conn.execute(
        "INSERT INTO sns_messages (message_id, topic_arn, type) VALUES (%s, %s, %s) "
        "ON CONFLICT (message_id) DO NOTHING",
        (message_id, topic_arn, type_),
    )
    return cur.rowcount == 1


async def annotate_message(
    conn: Conn,
    *,
    message_id: str,
    ses_event_type: str | None,
    ses_message_id: str | None,
    email_id: str | None,
    tenant_id: str | None,
    events_emitted: int,
) -> None:
    await conn.execute(
        "UPDATE sns_messages SET ses_event_type = %s, ses_message_id = %s, email_id = %s, tenant_id = %s, "
        "events_emitted = %s WHERE message_id = %s",
        (ses_event_type, ses_message_id, email_id, tenant_id, events_emitted, message_id),
    )


async def record_subscription(conn: Conn, topic_arn: str) -> None:
    await conn.execute(
        "INSERT INTO subscriptions (topic_arn) VALUES (%s) ON CONFLICT (topic_arn) DO UPDATE SET confirmed_at = now()",
        (topic_arn,),
    )
