"""The inbox: processed-event de-duplication for idempotent consumers, in the kit's `inbox`
table of the service's schema (created by the kit's migration next to `outbox`).

`claim(conn, consumer, event_id)` inside the handler's transaction records that `consumer`
applied the event; it returns False for a redelivery, and the handler then does nothing. A
rolled-back transaction un-claims it, so a failed attempt is applied again on redelivery.
"""

from __future__ import annotations

from mailroom_kit.db import Conn


async def claim(conn: Conn, consumer: str, event_id: str) -> bool:
    """Record `event_id` as applied by `consumer`; False if it already was (a redelivery)."""
    cur = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (consumer, event_id)
    )
    return cur.rowcount == 1
