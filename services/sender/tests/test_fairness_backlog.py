"""issue 23 fairness at the size the issue names: tenant A has 20,000 live emails in the sender's
queue, then tenant B sends one. A real sender process against the SES emulator reporting
MaxSendRate 50 (A's backlog alone would take ≈ 8 minutes to drain): B's email, published to
JetStream, reaches the emulator in under 5 s; A keeps sending meanwhile (not starved); nothing that
went out went out twice. A's backlog is not waited for (`test_fairness.py` follows a smaller burst
to the end, exactly once).

A's 20,000 are written straight into `deliveries` in the very state the `sender-queued` consumer
leaves a live email it hands to the queue (`held`, one attempt, the EmailQueued as published in
`queued_event`, due now: `SenderService.defer`), so the queue sends them as it would have. Why not
publish them: the consumer hands over ≈ 200-400 emails/s on this shared 2-core machine (README,
Fairness), so 20,000 published at once would be 50-100 s of ingestion before B, which is behind
them in the stream, is even read. Through the API a tenant's rate limit feeds the stream far slower
than that, so a real backlog is in the queue, not in the stream, when another tenant's email comes.

Why 5 s: B is handed to the queue as soon as it is read (no backlog in the stream), then it is in
the next claim's first round: one batch of sends (`MAILROOM_SENDER_CONCURRENCY` 8 / the 40
sends/s the governor allows ≈ 0.2 s) plus a poll. 5 s is the issue's "a few seconds" with room for
a loaded machine."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import httpx
import msgspec
from mailroom_devstack.infra import NatsServer
from mailroom_kit.db import Pool
from mailroom_kit.ids import new_id
from mailroom_ses_emulator import EmulatorServer
from nats.js import JetStreamContext

from .conftest import queued
from .test_end_to_end import SenderProcess, js, own_nats, publish  # noqa: F401  (fixtures)

BACKLOG = 20_000
RATE = 50


def sent_ids(emulator: EmulatorServer) -> list[str]:
    """The `mailroom_email_id` of every message the emulator sent, oldest first (no raw MIME)."""
    messages = httpx.get(f"{emulator.url}/_emulator/sent", params={"raw": "false"}, timeout=10).json()["messages"]
    return [m["tags"].get("mailroom_email_id") for m in messages]


async def test_a_tenants_20k_backlog_does_not_delay_another_tenants_single_email(
    sender_db: str,
    pool: Pool,
    own_nats: NatsServer,  # noqa: F811
    js: JetStreamContext,  # noqa: F811
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    big, small = new_id("ten"), new_id("ten")
    backlog = [queued(tenant_id=big, to=[f"a{i}@example.org"]) for i in range(BACKLOG)]
    a_ids = {e.email_id for e in backlog}
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO deliveries (email_id, tenant_id, mode, recipients, state, attempts, queued_event, "
            "next_attempt_at) SELECT e, %s, 'live', ARRAY[r], 'held', 1, q, now() "
            "FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS u(e, r, q)",
            (
                big,
                [e.email_id for e in backlog],
                [e.to[0].email for e in backlog],
                [msgspec.json.encode(e) for e in backlog],
            ),
        )
    httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": RATE}).raise_for_status()
    sender = SenderProcess(
        database_url=sender_db, nats_url=own_nats.url, ses_url=emulator.url, log_path=tmp_path / "s.log"
    )
    try:
        sender.start()

        async def a_sending() -> None:
            while not any(i in a_ids for i in sent_ids(emulator)):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(a_sending(), 30)  # the backlog is being worked on: B comes behind it
        single = queued(tenant_id=small, to=["b@example.org"])
        await publish(js, single)
        published = time.monotonic()

        async def single_sent() -> list[str]:
            while True:
                ids = sent_ids(emulator)
                if single.email_id in ids:
                    return ids
                await asyncio.sleep(0.05)

        at_b = await asyncio.wait_for(single_sent(), 60)
        b_latency = time.monotonic() - published
        a_before_b = sum(1 for i in at_b if i in a_ids)
        assert b_latency < 5, b_latency

        # A is not starved either: it keeps its turns while B is served, and after.
        async def a_keeps_sending() -> None:
            while sum(1 for i in sent_ids(emulator) if i in a_ids) < a_before_b + RATE:
                await asyncio.sleep(0.2)

        await asyncio.wait_for(a_keeps_sending(), 60)
    finally:
        sender.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200})
        async with pool.connection() as conn, conn.transaction():  # the rest of the backlog: not for later tests
            await conn.execute("DELETE FROM deliveries WHERE tenant_id IN (%s, %s)", (big, small))
    per_email = collections.Counter(i for i in sent_ids(emulator) if i in a_ids or i == single.email_id)
    assert per_email[single.email_id] == 1
    assert all(n == 1 for n in per_email.values()), [i for i, n in per_email.items() if n != 1]
    assert len(per_email) < BACKLOG // 4, len(per_email)  # B did not wait for A's backlog
