"""The inbox: processed-event de-duplication for idempotent consumers, in the kit's `inbox`
table of the service's schema (created by the kit's migration next to `outbox`).

`claim(conn, consumer, event_id)` inside the handler's transaction records that `consumer`
applied the event; it returns False for a redelivery, and the handler then does nothing.
`claim_many(conn, consumer, event_ids)` does the same for a batch in one statement and returns
the ids that are new. A rolled-back transaction un-claims them, so a failed attempt is applied
again on redelivery.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from mailroom_kit.db import Conn


async def claim(conn: Conn, consumer: str, event_id: str) -> bool:
    """Record `event_id` as applied by `consumer`; False if it already was (a redelivery)."""
    cur = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING", (consumer, event_id)
    )
    return cur.rowcount == 1


async def claim_many(conn: Conn, consumer: str, event_ids: list[str]) -> set[str]:
    """`claim` for a batch in one statement: the ids of `event_ids` not applied by `consumer`
    before (an id twice in `event_ids` is claimed once). Sorted, so two transactions claiming
    overlapping batches take the row locks in the same order."""
    if not event_ids:
        return set()
    cur = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) SELECT %s, jsonb_array_elements_text(%s::jsonb)"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        # One JSON text, not an array: psycopg dumps a list element by element in Python (issue 15).
        (consumer, msgspec.json.encode(sorted(set(event_ids))).decode()),
    )
    return {row["event_id"] for row in await cur.fetchall()}


async def purge(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Forget at most `limit` claims recorded before `cutoff` (the retention job; a claim is needed
    only while its event can still be delivered, i.e. within the stream's max age)."""
    cur = await conn.execute(
        "DELETE FROM inbox WHERE ctid IN"
        " (SELECT ctid FROM inbox WHERE processed_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
    return cur.rowcount
