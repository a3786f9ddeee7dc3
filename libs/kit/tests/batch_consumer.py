"""A batch consumer process for test_batches: `python batch_consumer.py SPEC_JSON NATS_URL DB_URL
SCHEMA [--kill-after-commit]`. Its batch handler is the shape every Mailroom batch handler has:
one transaction, the inbox claim for all event ids, then the effects of the claimed ones (rows
in `effects`) and, for the test to see, every delivery it was handed (rows in `seen`).

With --kill-after-commit it SIGKILLs itself right after its first batch committed, before the
kit acks anything (a kill -9 between commit and ack). Otherwise it runs until SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import msgspec
import nats
from mailroom_contracts.streams import ConsumerSpec
from mailroom_kit import inbox
from mailroom_kit.consumer import BatchItem, consume_batches
from mailroom_kit.db import Pool, open_pool


def batch_handler(pool: Pool, spec: ConsumerSpec, *, kill_after_commit: bool = False):  # type: ignore[no-untyped-def]
    async def handle(items: list[BatchItem]) -> None:
        async with pool.connection() as conn, conn.transaction():
            claimed = await inbox.claim_many(conn, spec.durable, [it.event.event_id for it in items])
            fresh = []
            for it in items:
                if it.event.event_id in claimed:
                    claimed.discard(it.event.event_id)
                    fresh.append(it.event.event_id)
            await conn.execute(
                "INSERT INTO effects (event_id, batch) SELECT unnest(%s::text[]), %s", (fresh, len(items))
            )
            await conn.execute(
                "INSERT INTO seen (event_id, delivery) SELECT * FROM unnest(%s::text[], %s::int[])",
                ([it.event.event_id for it in items], [it.delivery for it in items]),
            )
        if kill_after_commit:
            os.kill(os.getpid(), signal.SIGKILL)

    return handle


async def main(spec_json: str, nats_url: str, db_url: str, schema: str, kill_after_commit: bool) -> None:
    spec = msgspec.json.decode(spec_json, type=ConsumerSpec)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    pool = await open_pool(db_url, schema)
    nc = await nats.connect(nats_url)
    try:
        handler = batch_handler(pool, spec, kill_after_commit=kill_after_commit)
        await consume_batches(nc.jetstream(), spec, handler, stop=stop)
    finally:
        await nc.close()
        await pool.close()


if __name__ == "__main__":
    spec_json, nats_url, db_url, schema = sys.argv[1:5]
    asyncio.run(main(spec_json, nats_url, db_url, schema, kill_after_commit="--kill-after-commit" in sys.argv[5:]))
