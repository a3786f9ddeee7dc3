"""issue 23: a kill -9 of the sender in the middle of handing a stream backlog to its queue in bulk
(`SenderHandlers.backlog` / `queue_backlog`, a fetch of up to 256 per transaction) loses nothing and
queues nothing twice. 4,000 live emails of one tenant wait in JetStream; the SES emulator's
Max24HourSend is already reached, so nothing is sent while the hand-over runs (no send can be in
doubt at the kill: what is checked is the hand-over alone). The sender is killed with a fetch in
hand whose INSERT waits for a table lock the test holds (so nothing of it is committed or acked); a
second sender process takes over at once with the rest (a fetch is half of `max_ack_pending`).
Once the consumer has nothing pending or unacknowledged (the killed process's fetch comes back after
`ack_wait`, 30 s, and takes the per-message path): every email has exactly one row, owned by the
sender's queue. Then the quota is raised and every email reaches SES exactly once. (A kill between
a fetch's commit and its acks is `handle_batch`'s, the kit's batch path, tested with a
kill -9 in `libs/kit/tests/test_batches.py`.)"""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime
from pathlib import Path

import httpx
from mailroom_contracts.streams import SENDER_PROVIDER_ACCEPTED, SENDER_QUEUED, SENDER_TENANTS, STREAMS
from mailroom_devstack.infra import NatsServer
from mailroom_devstack.pytest_plugin import consumer_settled
from mailroom_kit.db import Pool
from mailroom_kit.ids import new_id
from mailroom_kit.jetstream import reconcile
from mailroom_ses_emulator import EmulatorServer
from nats.js import JetStreamContext

from .conftest import queued
from .test_end_to_end import SenderProcess, js, own_nats  # noqa: F401  (fixtures)
from .test_fairness_backlog import publish_all, sent_ids

EMAILS = 4_000


async def count_of(pool: Pool, tenant: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM deliveries WHERE tenant_id = %s", (tenant,))
        row = await cur.fetchone()
        return int(row["n"]) if row else 0


async def rows_of(pool: Pool, tenant: str) -> list[dict[str, object]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT email_id, state, queued_event IS NOT NULL AS queued FROM deliveries WHERE tenant_id = %s",
            (tenant,),
        )
        return await cur.fetchall()


async def test_a_kill_during_the_bulk_hand_over_loses_nothing_and_queues_nothing_twice(
    sender_db: str,
    pool: Pool,
    own_nats: NatsServer,  # noqa: F811
    js: JetStreamContext,  # noqa: F811
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    tenant = new_id("ten")
    emails = [queued(tenant_id=tenant, to=[f"c{i}@example.org"]) for i in range(EMAILS)]
    ids = {e.email_id for e in emails}
    already = httpx.get(f"{emulator.url}/_emulator/send-times").json()["count"]
    httpx.put(
        f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 2000, "Max24HourSend": already}
    ).raise_for_status()
    env = {"MAILROOM_SENDER_DAILY_QUOTA_RECHECK_SECONDS": "1", "MAILROOM_SENDER_SEND_QUOTA_REFRESH_SECONDS": "1"}
    first = SenderProcess(
        database_url=sender_db, nats_url=own_nats.url, ses_url=emulator.url, log_path=tmp_path / "1.log", **env
    )
    second = SenderProcess(
        database_url=sender_db, nats_url=own_nats.url, ses_url=emulator.url, log_path=tmp_path / "2.log", **env
    )
    try:
        await reconcile(js, STREAMS, [SENDER_QUEUED, SENDER_PROVIDER_ACCEPTED, SENDER_TENANTS])
        await publish_all(js, emails)
        # The first process fetches a backlog and is killed while its bulk INSERT waits for a lock
        # this test holds: a fetch taken, nothing of it committed or acked.
        async with pool.connection() as blocker, blocker.transaction():
            await blocker.execute("LOCK TABLE deliveries IN SHARE MODE")
            first.start()
            deadline = time.monotonic() + 30
            while (await js.consumer_info(SENDER_QUEUED.stream, SENDER_QUEUED.durable)).num_ack_pending == 0:
                assert time.monotonic() < deadline, "the first process fetched nothing"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # its INSERT is waiting for the lock now
            first.kill()
        assert await count_of(pool, tenant) == 0

        second.start()
        second_started = time.time()

        async def drained() -> None:
            while not await consumer_settled(js, SENDER_QUEUED.stream, SENDER_QUEUED.durable):
                await asyncio.sleep(0.5)

        await asyncio.wait_for(drained(), 90)
        rows = await rows_of(pool, tenant)
        assert collections.Counter(str(r["email_id"]) for r in rows) == {i: 1 for i in ids}
        # Owned by the queue: `held`, or `sending` for the moment the queue looks at one again (the
        # daily quota then sends it back to `held`, due a second later).
        assert all(r["queued"] and r["state"] in ("held", "sending") for r in rows), collections.Counter(
            (r["state"], r["queued"]) for r in rows
        )
        assert sent_ids(emulator).count(emails[0].email_id) == 0  # nothing went out while the quota was reached
        redelivered = [
            line
            for line in second.log_lines()
            if line.get("event") == "message.handled"
            and line.get("consumer") == SENDER_QUEUED.durable
            and int(str(line.get("delivery", 1))) > 1
        ]
        assert redelivered, "no message of the killed process came back: the kill tested nothing"
        # The second process went on with the backlog at once, not after the killed one's unacked
        # fetch timed out (ack_wait, 30 s): a fetch is half of max_ack_pending.
        fresh = [
            datetime.fromisoformat(str(line["timestamp"])).timestamp()
            for line in second.log_lines()
            if line.get("event") == "message.handled" and line.get("delivery") == 1
        ]
        assert fresh and min(fresh) - second_started < 15, (min(fresh) - second_started) if fresh else None
        assert all(line.get("outcome") == "ack" and line.get("result") == "held" for line in redelivered), {
            (line.get("outcome"), line.get("result")) for line in redelivered
        }

        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"Max24HourSend": 50_000}).raise_for_status()

        async def all_sent() -> None:
            while len(set(sent_ids(emulator)) & ids) < EMAILS:
                await asyncio.sleep(0.5)

        await asyncio.wait_for(all_sent(), 120)
        await asyncio.sleep(1.0)  # anything sent twice would show up now
    finally:
        first.kill()
        second.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200, "Max24HourSend": 50_000})
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM deliveries WHERE tenant_id = %s", (tenant,))
    per_email = collections.Counter(i for i in sent_ids(emulator) if i in ids)
    assert set(per_email) == ids
    assert all(n == 1 for n in per_email.values()), [i for i, n in per_email.items() if n != 1]
