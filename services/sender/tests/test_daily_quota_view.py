"""issue 23, the operator's view of the daily-quota hold: a real sender process against the SES
emulator whose Max24HourSend leaves room for 2 more sends. Of 5 live transactional emails, 2 go out
and 3 are held; the sender's `GET /status` says the transactional stream is held for the daily
quota with 3 emails in its queue, and /metrics says the same. Once the quota is raised, the held
ones go out (each once) and the view clears.

The operator API's view of the same (`mailroom.rpc.sender.status`, behind `GET /admin/v1/sending`):
the process answers the request/reply with the quota, the transactional stream held for
`daily_quota` with 3 waiting, and the tenant's 3 queued; a second "replica" built in this process
(its own runtime, none of the process's memory) answers the same from the database; once the
quota is raised it clears.

The queue's counts are the whole database's (the operator's view of every tenant), so this test has a
database of its own: what earlier tests left in the session's sender database does not count here."""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import pytest
from mailroom_contracts import subjects
from mailroom_contracts.rpc import SendingStatusReply, SendingStatusRequest
from mailroom_devstack.infra import NatsServer, Postgres
from mailroom_kit import rpc
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.ids import new_id
from mailroom_kit.migrations import migrate
from mailroom_kit.runtime import Runtime
from mailroom_sender.app import MIGRATIONS
from mailroom_sender.sending import sending_status
from mailroom_sender.service import SCHEMA
from mailroom_sender.settings import SenderSettings
from mailroom_ses_emulator import EmulatorServer
from nats.js import JetStreamContext

from .conftest import queued, sent_messages
from .test_end_to_end import SenderProcess, js, own_nats, publish  # noqa: F401  (fixtures)


@pytest.fixture
def own_db(postgres: Postgres) -> Iterator[str]:
    name = f"mailroom_test_{secrets.token_hex(6)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture
async def own_pool(own_db: str) -> AsyncIterator[Pool]:
    await migrate(own_db, SCHEMA, MIGRATIONS)
    p = await open_pool(own_db, SCHEMA, min_size=1, max_size=4)
    yield p
    await p.close()


async def _until(check: Any, timeout: float, what: str) -> Any:
    async def loop() -> Any:
        while True:
            got = check()
            if got:
                return got
            await asyncio.sleep(0.25)

    try:
        return await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out: {what}") from None


async def test_operator_sees_the_daily_quota_hold_and_it_clears(
    own_db: str,
    own_pool: Pool,
    own_nats: NatsServer,  # noqa: F811
    js: JetStreamContext,  # noqa: F811
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    already = httpx.get(f"{emulator.url}/_emulator/send-times").json()["count"]
    httpx.put(
        f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200, "Max24HourSend": already + 2}
    ).raise_for_status()
    sender = SenderProcess(
        database_url=own_db,
        nats_url=own_nats.url,
        ses_url=emulator.url,
        log_path=tmp_path / "s.log",
        MAILROOM_SENDER_SEND_QUOTA_REFRESH_SECONDS="1",
        MAILROOM_SENDER_DAILY_QUOTA_RECHECK_SECONDS="1",
        MAILROOM_METRICS_INTERVAL_SECONDS="1",
    )
    ops = f"http://127.0.0.1:{sender.port}"
    try:
        sender.start()
        tenant = new_id("ten")
        emails = [queued(to=[f"daily{i}@example.org"], tenant_id=tenant) for i in range(5)]
        ids = {e.email_id for e in emails}
        for ev in emails:
            await publish(js, ev)

        def sent_ids() -> list[str]:
            return [
                m["tags"].get("mailroom_email_id")
                for m in sent_messages(emulator)
                if m["tags"].get("mailroom_email_id") in ids
            ]

        def held_view() -> dict[str, Any] | None:
            st = httpx.get(f"{ops}/status", timeout=5).json()
            queue = st["queue"]
            held = queue["waiting"] + queue["due"]
            return st if st["daily_quota_holding"]["transactional"] and held == 3 else None

        status = await _until(held_view, 30, "the status view shows the daily-quota hold")
        assert len(sent_ids()) == 2
        assert status["queue"]["tenant_paused"] == 0
        assert status["send_quota"]["max_24_hour_send"] == already + 2
        assert httpx.get(f"{ops}/ready", timeout=5).status_code == 200  # holding is not a fault

        def metrics_show_it() -> bool:
            text = httpx.get(f"{ops}/metrics", timeout=5).text
            return (
                'mailroom_sender_daily_quota_holding{stream="transactional"} 1.0' in text
                and 'mailroom_sender_queue_emails{reason="waiting"}' in text
            )

        await _until(metrics_show_it, 15, "metrics show the hold")

        # The operator API's request/reply, answered by the sender process.
        nc = await nats.connect(own_nats.url)
        try:
            ask = SendingStatusRequest()
            reply = await rpc.request(nc, subjects.RPC_SENDER_STATUS, ask, SendingStatusReply, timeout=10)
            assert reply.error is None
            assert reply.max_24_hour_send == already + 2 and reply.max_send_rate == 200
            assert reply.sent_last_24_hours is not None and reply.sent_last_24_hours >= already + 2
            assert reply.refreshed_at is not None
            assert reply.transactional_reserve == 0.5
            streams = {st.stream: st for st in reply.streams}
            assert set(streams) == {"transactional", "broadcast"}
            tx = streams["transactional"]
            assert (tx.held, tx.reason, tx.waiting) == (True, "daily_quota", 3)
            assert streams["broadcast"].held and streams["broadcast"].waiting == 0
            assert {t.tenant_id: t.held for t in reply.tenants}[tenant] == {"queued": 3}

            # Another replica (no memory of this process's sends) gives the same answer.
            settings = SenderSettings.from_env({"MAILROOM_DATABASE_URL": own_db, "MAILROOM_NATS_URL": own_nats.url})
            other = Runtime(
                name="sender", schema=SCHEMA, settings=settings, migrations_dir=MIGRATIONS, pool=own_pool, nc=nc, js=js
            )
            # (refreshed_at moves every second: GetAccount is re-read each second here.)
            again = await sending_status(other)
            assert msgspec.structs.replace(again, refreshed_at=None) == msgspec.structs.replace(
                reply, refreshed_at=None
            )
        finally:
            await nc.close()

        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"Max24HourSend": 50000}).raise_for_status()
        await _until(lambda: len(sent_ids()) == 5, 30, "held emails sent once the quota is raised")

        def cleared() -> bool:
            st = httpx.get(f"{ops}/status", timeout=5).json()
            return not st["daily_quota_holding"]["transactional"] and st["queue"] == {
                "tenant_paused": 0,
                "waiting": 0,
                "due": 0,
            }

        await _until(cleared, 15, "the view clears")

        nc = await nats.connect(own_nats.url)
        try:
            reply = await rpc.request(nc, subjects.RPC_SENDER_STATUS, ask, SendingStatusReply, timeout=10)
        finally:
            await nc.close()
        assert reply.max_24_hour_send == 50000
        assert [(st.stream, st.held, st.reason, st.waiting) for st in reply.streams] == [
            ("transactional", False, None, 0),
            ("broadcast", False, None, 0),
        ]
        assert tenant not in {t.tenant_id for t in reply.tenants}
        await asyncio.sleep(1.0)
    finally:
        sender.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200, "Max24HourSend": 50000})
    assert all(n == 1 for n in collections.Counter(sent_ids()).values())
    assert set(sent_ids()) == ids
