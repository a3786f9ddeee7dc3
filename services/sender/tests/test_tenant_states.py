"""issue 23: tenant states in the sender, through the real handlers, Postgres and the SES emulator.
`paused` holds queued emails (durably, neither sent nor failed) and the sender's own queue sends
them after `active`; `blocked` fails queued and held ones with `tenant_blocked`; the read model keeps
the latest `updated_at`; a send decided before a pause goes out, one decided after is held."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from mailroom_contracts.events import EmailFailed, EmailSent, TenantStatus, TenantUpdated
from mailroom_kit.db import Pool
from mailroom_kit.ids import new_id
from mailroom_sender.handlers import SenderHandlers
from mailroom_sender.held import HeldQueue
from mailroom_sender.providers import SesProvider
from mailroom_ses_emulator import EmulatorServer

from .conftest import delivery_row, make_service, outbox_events, queued, redelivered, sent_messages

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def tenant_event(tenant_id: str, status: TenantStatus, at: datetime, reason: str | None = None) -> TenantUpdated:
    return TenantUpdated(
        event_id=new_id("evt"),
        occurred_at=at,
        tenant_id=tenant_id,
        status=status,
        status_reason=reason,
        updated_at=at,
    )


def types(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


@pytest.fixture
def tenant() -> str:
    return new_id("ten")


@pytest.fixture
def held_queue(pool: Pool, handlers: SenderHandlers) -> HeldQueue:
    return HeldQueue(pool, handlers, batch=8, poll_seconds=0.05)


async def tenant_row(pool: Pool, tenant_id: str) -> dict | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM tenants WHERE tenant_id = %s", (tenant_id,))
        return await cur.fetchone()


async def test_paused_tenant_email_is_held_then_sent_after_resume(
    handlers: SenderHandlers, held_queue: HeldQueue, pool: Pool, emulator: EmulatorServer, tenant: str
) -> None:
    await handlers.tenant_updated(tenant_event(tenant, "paused", T0, "billing"))
    ev = queued(tenant_id=tenant)
    await handlers.email_queued(ev)  # acked: the row holds it now

    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "held" and row["queued_event"] is not None
    assert sent_messages(emulator, ev.email_id) == []
    assert await outbox_events(pool, ev.email_id) == []  # neither sent nor failed
    # A redelivered EmailQueued of a held email is acked as held, not sent.
    await handlers.email_queued(redelivered(ev))
    assert sent_messages(emulator, ev.email_id) == []
    # The queue leaves a paused tenant's email alone.
    await held_queue.run_once()
    assert (await delivery_row(pool, ev.email_id) or {})["state"] == "held"

    await handlers.tenant_updated(tenant_event(tenant, "active", T0 + timedelta(hours=1)))
    assert await held_queue.run_once() >= 1
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sent" and row["queued_event"] is None
    assert len(sent_messages(emulator, ev.email_id)) == 1
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]
    # Settled: neither the queue nor a redelivery sends it again.
    await held_queue.run_once()
    await handlers.email_queued(redelivered(ev))
    assert len(sent_messages(emulator, ev.email_id)) == 1


async def test_held_queue_worker_wakes_on_resume(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, tenant: str
) -> None:
    """The running worker, woken by the resume the tenants handler applied (no poll needed)."""
    queue: HeldQueue | None = None

    def wake() -> None:
        assert queue is not None
        queue.wake()

    handlers = SenderHandlers(pool, make_service(ses_provider), on_resume=wake)
    queue = HeldQueue(pool, handlers, poll_seconds=60)
    await handlers.tenant_updated(tenant_event(tenant, "paused", T0))
    emails = [queued(tenant_id=tenant) for _ in range(3)]
    for ev in emails:
        await handlers.email_queued(ev)
    stop = asyncio.Event()
    worker = asyncio.create_task(queue.run(stop))
    try:
        await asyncio.sleep(0.1)
        await handlers.tenant_updated(tenant_event(tenant, "active", T0 + timedelta(minutes=1)))
        async with asyncio.timeout(10):
            while any(len(sent_messages(emulator, ev.email_id)) != 1 for ev in emails):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 5)
    for ev in emails:
        assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]


async def test_blocked_tenant_fails_held_and_queued_emails(
    handlers: SenderHandlers, held_queue: HeldQueue, pool: Pool, emulator: EmulatorServer, tenant: str
) -> None:
    await handlers.tenant_updated(tenant_event(tenant, "paused", T0))
    held = queued(tenant_id=tenant, mode="test")
    await handlers.email_queued(held)
    await handlers.tenant_updated(tenant_event(tenant, "blocked", T0 + timedelta(minutes=1), "abuse"))

    row = await delivery_row(pool, held.email_id)
    assert row is not None and row["state"] == "failed" and row["failure_reason"] == "tenant_blocked"
    assert row["queued_event"] is None
    (failed,) = await outbox_events(pool, held.email_id)
    assert isinstance(failed, EmailFailed) and failed.reason == "tenant_blocked" and failed.mode == "test"

    later = queued(tenant_id=tenant)
    await handlers.email_queued(later)
    (failed_later,) = await outbox_events(pool, later.email_id)
    assert isinstance(failed_later, EmailFailed) and failed_later.reason == "tenant_blocked"
    assert sent_messages(emulator, later.email_id) == []
    # Unblocking does not revive a failed email.
    await handlers.tenant_updated(tenant_event(tenant, "active", T0 + timedelta(minutes=2)))
    await held_queue.run_once()
    assert (await delivery_row(pool, held.email_id) or {})["state"] == "failed"


async def test_latest_updated_at_wins(handlers: SenderHandlers, pool: Pool, tenant: str) -> None:
    await handlers.tenant_updated(tenant_event(tenant, "paused", T0 + timedelta(minutes=5), "late"))
    # An older state delivered later (reordered, or redelivered) changes nothing.
    await handlers.tenant_updated(tenant_event(tenant, "active", T0))
    await handlers.tenant_updated(tenant_event(tenant, "blocked", T0 + timedelta(minutes=5)))  # same time: no-op
    row = await tenant_row(pool, tenant)
    assert row is not None and row["status"] == "paused" and row["status_reason"] == "late"
    ev = queued(tenant_id=tenant)
    await handlers.email_queued(ev)
    assert (await delivery_row(pool, ev.email_id) or {})["state"] == "held"


async def test_send_decided_before_a_pause_goes_out_and_the_pause_waits_for_it(
    handlers: SenderHandlers, pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, tenant: str
) -> None:
    """TX1 share-locks the tenant row: a pause arriving while a send is being decided waits for
    that decision; the email it decided to send is sent (not also held), the next one is held."""
    await handlers.tenant_updated(tenant_event(tenant, "active", T0))
    service = make_service(ses_provider)
    first = queued(tenant_id=tenant)
    prepared = service.prepare(first)
    async with pool.connection() as conn:
        async with conn.transaction():
            begin = await service.begin(conn, first, prepared)
            pause = asyncio.create_task(handlers.tenant_updated(tenant_event(tenant, "paused", T0 + timedelta(1))))
            await asyncio.sleep(0.5)
            assert not pause.done()  # waits for the send decision in flight
    await asyncio.wait_for(pause, 10)
    assert type(begin).__name__ == "Proceed"
    result = await service.send(first, prepared)
    async with pool.connection() as conn, conn.transaction():
        assert await service.record_sent(conn, first, result)
    assert len(sent_messages(emulator, first.email_id)) == 1

    second = queued(tenant_id=tenant)
    await handlers.email_queued(second)
    assert (await delivery_row(pool, second.email_id) or {})["state"] == "held"
    assert isinstance((await outbox_events(pool, first.email_id))[0], EmailSent)
    assert await outbox_events(pool, second.email_id) == []
