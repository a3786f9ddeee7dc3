"""Transactional outbox and its relay.

`add(conn, event)` writes the event into the schema's outbox inside the caller's
transaction (no publish without commit) and NOTIFYs the relay, which wakes on commit.
The relay takes rows with `FOR UPDATE SKIP LOCKED` (any number of replicas may run),
publishes each to JetStream with `Nats-Msg-Id = event_id`, and deletes the rows once
JetStream acknowledged them, all in one transaction. A crash after publish and before
commit republishes; JetStream's duplicate window drops the copy, and consumers are
idempotent by event id beyond it. `run` waits through the kit's `PgWaker`, so a stop ends it at once.
"""

from __future__ import annotations

import asyncio

from mailroom_contracts import encode, subject_for
from mailroom_contracts.events import Event
from nats.js import JetStreamContext

from mailroom_kit.db import Conn, Pool
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import OUTBOX_PUBLISHED
from mailroom_kit.wake import PgWaker, sleep_until_stopped

log = get_logger(__name__)


def channel(schema: str) -> str:
    return f"mailroom_outbox_{schema}"


async def add(conn: Conn, event: Event, *, schema: str) -> None:
    await conn.execute(
        "INSERT INTO outbox (event_id, subject, payload) VALUES (%s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
        (event.event_id, subject_for(event), encode(event)),
    )
    await conn.execute("SELECT pg_notify(%s, '')", (channel(schema),))


class OutboxRelay:
    def __init__(
        self,
        pool: Pool,
        js: JetStreamContext,
        *,
        url: str,
        schema: str,
        batch_size: int = 200,
        idle_poll_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._js = js
        self._url = url
        self._schema = schema
        self._batch = batch_size
        self._idle = idle_poll_seconds

    async def relay_once(self) -> int:
        """Publish and delete one batch; return how many rows were relayed."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, event_id, subject, payload FROM outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (self._batch,),
            )
            rows = await cur.fetchall()
            if not rows:
                return 0
            for row in rows:
                await self._js.publish(row["subject"], bytes(row["payload"]), headers={"Nats-Msg-Id": row["event_id"]})
            await conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r["id"] for r in rows],))
        OUTBOX_PUBLISHED.labels(schema=self._schema).inc(len(rows))
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set (returns at once); woken by NOTIFY, polling as a fallback."""
        async with PgWaker(self._url, channel(self._schema), stop=stop) as waker:
            while not stop.is_set():
                waker.clear()  # before looking: a commit during the batch wakes the next wait
                try:
                    while await self.relay_once():
                        if stop.is_set():
                            return
                except Exception as exc:  # NATS or Postgres down: keep rows, retry shortly
                    log.warning("outbox.relay_failed", schema=self._schema, error=repr(exc))
                    await sleep_until_stopped(stop, 1.0)
                    continue
                await waker.wait(self._idle)
