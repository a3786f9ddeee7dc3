"""Inbox: event ids a consumer has already applied (idempotent consumers), next to the outbox."""

from __future__ import annotations

from mailroom_kit.db import Conn


async def claim(conn: Conn, consumer: str, event_id: str) -> bool:
    """True the first time `consumer` sees `event_id` (in the caller's transaction)."""
    cur = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING event_id",
        (consumer, event_id),
    )
    return await cur.fetchone() is not None
