"""issue 23 fairness: when SES's send rate is the limit, one tenant's burst does not starve another.
A real sender process against the SES emulator reporting MaxSendRate 10: tenant A queues 120 live
emails (≈ 15 s of sends), then tenant B queues one. B's email reaches the emulator within seconds,
long before A's backlog has drained, and every email goes out exactly once."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import httpx
from mailroom_contracts.events import EmailSent
from mailroom_devstack.infra import NatsServer
from mailroom_ses_emulator import EmulatorServer
from nats.js import JetStreamContext

from .conftest import queued, sent_messages
from .test_end_to_end import SenderProcess, js, own_nats, publish, stream_events  # noqa: F401  (fixtures)

BURST = 120


async def test_one_tenants_burst_does_not_delay_another_tenants_email(
    sender_db: str,
    own_nats: NatsServer,  # noqa: F811
    js: JetStreamContext,  # noqa: F811
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 10}).raise_for_status()
    sender = SenderProcess(
        database_url=sender_db, nats_url=own_nats.url, ses_url=emulator.url, log_path=tmp_path / "s.log"
    )
    try:
        sender.start()
        burst = [queued(tenant_id="ten_burst", to=[f"a{i}@example.org"]) for i in range(BURST)]
        for ev in burst:
            await publish(js, ev)
        a_ids = {e.email_id for e in burst}
        single = queued(tenant_id="ten_single", to=["b@example.org"])
        await publish(js, single)
        published = time.monotonic()

        async def single_sent() -> int:
            while True:
                messages = sent_messages(emulator)
                if any(m["tags"].get("mailroom_email_id") == single.email_id for m in messages):
                    return sum(1 for m in messages if m["tags"].get("mailroom_email_id") in a_ids)
                await asyncio.sleep(0.1)

        a_sent_before_b = await asyncio.wait_for(single_sent(), 60)
        b_latency = time.monotonic() - published
        # The rate allows ≈ 8/s: A's 120 take ≈ 15 s. B went out within seconds, most of A still queued.
        assert b_latency < 12, b_latency
        assert a_sent_before_b < BURST // 2, a_sent_before_b

        async def all_sent() -> None:
            while sum(1 for m in sent_messages(emulator) if m["tags"].get("mailroom_email_id") in a_ids) < BURST:
                await asyncio.sleep(0.25)

        await asyncio.wait_for(all_sent(), 120)
        await asyncio.sleep(1.0)  # anything sent twice would show up now
    finally:
        sender.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200})
    ids = a_ids | {single.email_id}
    per_email = collections.Counter(
        m["tags"].get("mailroom_email_id") for m in sent_messages(emulator) if m["tags"].get("mailroom_email_id") in ids
    )
    assert set(per_email) == ids
    assert all(n == 1 for n in per_email.values()), [i for i, n in per_email.items() if n != 1]
    sent = collections.Counter(e.email_id for e in await stream_events(js) if isinstance(e, EmailSent))
    assert all(sent[i] == 1 for i in ids)


async def test_an_email_deferred_for_want_of_a_token_is_sent_without_waiting_for_the_queues_poll(
    sender_db: str,
    own_nats: NatsServer,  # noqa: F811
    js: JetStreamContext,  # noqa: F811
    emulator: EmulatorServer,
    tmp_path: Path,
) -> None:
    """A live email that finds no token at once is handed to the sender's queue (due now), and the
    queue is woken: it goes out as soon as the rate allows, not at the queue's next poll (30 s here)."""
    httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 10}).raise_for_status()
    sender = SenderProcess(
        database_url=sender_db,
        nats_url=own_nats.url,
        ses_url=emulator.url,
        log_path=tmp_path / "s.log",
        MAILROOM_SENDER_HELD_POLL_SECONDS="30",
    )
    try:
        sender.start()
        await asyncio.sleep(2.0)  # the queue's first look is over: it now sleeps a whole poll
        emails = [queued(tenant_id="ten_wake", to=[f"w{i}@example.org"]) for i in range(6)]
        ids = {e.email_id for e in emails}
        for ev in emails:
            await publish(js, ev)
        started = time.monotonic()

        async def all_sent() -> None:
            while len({m["tags"].get("mailroom_email_id") for m in sent_messages(emulator)} & ids) < len(ids):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(all_sent(), 60)
        elapsed = time.monotonic() - started
    finally:
        sender.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200})
    deferred = [
        line
        for line in sender.log_lines()
        if line.get("event") == "message.handled" and line.get("result") == "held" and line.get("email_id") in ids
    ]
    assert deferred, "no email waited for a token: the test shows nothing"
    assert elapsed < 10, elapsed  # 6 emails at ≈ 8/s with a bucket of 2, far under the 30 s poll
