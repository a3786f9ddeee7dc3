"""Scheduled outbox rows (`outbox.add(..., not_before=)`) against real Postgres and a real
nats-server: published no earlier than due and within a second after it by the relay's own
timer, canceled or moved under the relay's row lock (never both published and canceled), never
starved by a busy immediate outbox, and never counted in the immediate outbox."""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
from mailroom_contracts.events import DomainCreated, DomainRecord, DomainSnapshot
from mailroom_contracts.streams import StreamSpec
from mailroom_contracts.subjects import DOMAIN_CREATED
from mailroom_kit import outbox
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from nats.aio.msg import Msg
from nats.js import JetStreamContext

FIXTURE_MIGRATIONS = Path(__file__).parent / "fixture_migrations"


def event() -> DomainCreated:
    """Any contract event will do; a domain event is the smallest to build."""
    now = datetime.now(UTC)
    snapshot = DomainSnapshot(
        domain_id=f"dom_{secrets.token_hex(13)}",
        tenant_id="ten_x",
        name="x.test",
        status="pending",
        region="us-east-1",
        mail_from_domain="bounce.x.test",
        records=[DomainRecord(purpose="dkim", type="CNAME", name="a", value="b")],
        created_at=now,
    )
    return DomainCreated(event_id=f"evt_{secrets.token_hex(13)}", occurred_at=now, tenant_id="ten_x", domain=snapshot)


class Space:
    def __init__(self, pool: Pool, js: JetStreamContext, url: str, schema: str) -> None:
        self.pool, self.js, self.url, self.schema = pool, js, url, schema
        self.arrived: dict[str, float] = {}  # Nats-Msg-Id → time.time() it reached our subscriber
        self.payloads: dict[str, bytes] = {}  # Nats-Msg-Id → the data that arrived

    async def add(self, not_before: datetime | None = None) -> str:
        e = event()
        async with self.pool.connection() as conn, conn.transaction():
            await outbox.add(conn, e, schema=self.schema, not_before=not_before)
        return e.event_id

    async def counts(self) -> tuple[int, int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM outbox) AS immediate,"
                " (SELECT count(*) FROM outbox_scheduled) AS scheduled"
            )
            row = await cur.fetchone()
        assert row is not None
        return int(row["immediate"]), int(row["scheduled"])

    def relay(self, **kwargs: float) -> outbox.OutboxRelay:
        return outbox.OutboxRelay(self.pool, self.js, url=self.url, schema=self.schema, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def space(database_url: str, nats_url: str) -> AsyncIterator[Space]:
    schema = f"sched_{secrets.token_hex(3)}"
    await migrate(database_url, schema, FIXTURE_MIGRATIONS)
    stream = f"SCHED_{secrets.token_hex(3)}".upper()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    # The events' own subject, in a stream of this test's (other tests' streams may hold it too:
    # a private NATS per test is not needed, the test only looks at what its subscriber gets).
    await reconcile(js, [StreamSpec(name=stream, subjects=[DOMAIN_CREATED], description="scheduled test")], [])
    pool = await open_pool(database_url, schema)
    s = Space(pool, js, database_url, schema)

    async def on_msg(msg: Msg) -> None:
        assert msg.headers is not None
        s.arrived.setdefault(msg.headers["Nats-Msg-Id"], time.time())
        s.payloads.setdefault(msg.headers["Nats-Msg-Id"], msg.data)

    sub = await nc.subscribe(DOMAIN_CREATED, cb=on_msg)
    yield s
    await sub.unsubscribe()
    await js.delete_stream(stream)
    await pool.close()
    await nc.close()


@contextlib.asynccontextmanager
async def running(relay: outbox.OutboxRelay) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_published_no_earlier_than_due_and_within_a_second_after(space: Space) -> None:
    # The relay polls every 30 s here: only its timer can publish the rows on time.
    relay = space.relay(idle_poll_seconds=30.0)
    async with running(relay):
        await asyncio.sleep(0.2)  # the relay is idle (an empty window) before anything is scheduled
        due = [datetime.now(UTC) + timedelta(seconds=s) for s in (1.2, 0.6)]
        later = await space.add(due[0])
        sooner = await space.add(due[1])  # scheduled after, due before: the NOTIFY recomputes the wait
        now_id = await space.add()
        await until(lambda: now_id in space.arrived)
        assert sooner not in space.arrived and later not in space.arrived
        while (await space.counts())[0]:  # the relay deletes the row once its ack is in
            await asyncio.sleep(0.01)
        assert await space.counts() == (0, 2)  # waiting rows are not immediate backlog
        await until(lambda: later in space.arrived)
    for event_id, at in ((sooner, due[1]), (later, due[0])):
        late = space.arrived[event_id] - at.timestamp()
        assert 0 <= late < 1.0, (event_id, late)
    assert await space.counts() == (0, 0)


async def test_cancel_and_reschedule_take_the_relays_row_lock(space: Space) -> None:
    relay = space.relay(idle_poll_seconds=30.0)
    far = datetime.now(UTC) + timedelta(hours=1)
    canceled, moved = await space.add(far), await space.add(far)
    async with running(relay):
        async with space.pool.connection() as conn, conn.transaction():
            assert await outbox.cancel_scheduled(conn, canceled)
            assert not await outbox.cancel_scheduled(conn, canceled)  # already gone
        new_time = datetime.now(UTC) + timedelta(seconds=0.5)
        async with space.pool.connection() as conn, conn.transaction():
            e = event()
            same_id = DomainCreated(
                event_id=moved, occurred_at=new_time, tenant_id=e.tenant_id, domain=e.domain
            )  # the payload is replaced with the same id
            assert await outbox.reschedule(conn, same_id, schema=space.schema, not_before=new_time)
        await until(lambda: moved in space.arrived)
        assert 0 <= space.arrived[moved] - new_time.timestamp() < 1.0
        async with space.pool.connection() as conn, conn.transaction():
            # Published: there is nothing left to move or cancel.
            assert not await outbox.reschedule(conn, same_id, schema=space.schema, not_before=far)
            assert not await outbox.cancel_scheduled(conn, moved)
        await asyncio.sleep(0.3)
    assert canceled not in space.arrived
    assert await space.counts() == (0, 0)


async def test_cancel_at_the_due_moment_is_either_sent_or_canceled_never_both(space: Space) -> None:
    relays = [space.relay(idle_poll_seconds=30.0) for _ in range(2)]  # two replicas, as in production
    outcomes: dict[str, bool] = {}

    async def cancel(event_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with space.pool.connection() as conn, conn.transaction():
            outcomes[event_id] = await outbox.cancel_scheduled(conn, event_id) is not None

    async with running(relays[0]), running(relays[1]):
        for _ in range(40):
            due = datetime.now(UTC) + timedelta(seconds=0.05)
            event_id = await space.add(due)
            # Cancel around the due moment: a bit before, at, or after the relay takes the row.
            await cancel(event_id, max(0.0, (due - datetime.now(UTC)).total_seconds() + random.uniform(-0.01, 0.01)))
        await asyncio.sleep(1.0)  # anything that was going to be published has been
    sent = {e for e in outcomes if e in space.arrived}
    canceled = {e for e, ok in outcomes.items() if ok}
    assert not sent & canceled, "published and canceled"
    assert sent | canceled == set(outcomes), "neither published nor canceled"
    assert sent and canceled, "the race went one way only: the test did not exercise it"
    assert await space.counts() == (0, 0)


async def test_a_busy_immediate_outbox_does_not_starve_due_rows(space: Space) -> None:
    # A backlog of immediate rows the relay needs many windows for (2 rows each): it never idles.
    async with space.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            "INSERT INTO outbox (event_id, subject, payload)"
            " SELECT 'evt_backlog_' || %s || '_' || g, %s, 'x' FROM generate_series(1, 1500) g RETURNING event_id",
            (secrets.token_hex(4), DOMAIN_CREATED),
        )
        backlog = [row["event_id"] for row in await cur.fetchall()]
    relay = space.relay(batch_size=2, idle_poll_seconds=30.0)
    async with running(relay):
        await asyncio.sleep(0.05)  # the relay is in its busy loop now
        due = datetime.now(UTC) + timedelta(seconds=0.15)
        due_id = await space.add(due)
        await until(lambda: due_id in space.arrived)
        assert 0 <= space.arrived[due_id] - due.timestamp() < 1.0
        await until(lambda: set(backlog) <= set(space.arrived), timeout=60)
    # It went out in the middle of the backlog, not after it.
    assert space.arrived[due_id] < max(space.arrived[e] for e in backlog)


async def test_the_immediate_window_is_the_one_it_always_was(space: Space) -> None:
    """Scheduling costs the immediate outbox nothing: its window is still the one plain SELECT."""
    assert outbox._IMMEDIATE == (
        "SELECT id, event_id, subject, payload, trace_context FROM outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    due_id = await space.add(datetime.now(UTC) - timedelta(seconds=1))
    now_id = await space.add()
    relay = space.relay()
    assert await relay.relay_once() == 1  # the immediate row only
    assert await relay.relay_due_once() == 1  # the due one
    await until(lambda: {due_id, now_id} <= set(space.arrived))
    assert await space.counts() == (0, 0)


async def test_the_owner_records_the_publish_in_the_relays_transaction(space: Space) -> None:
    seen: list[list[str]] = []
    fail = True

    async def on_relayed(conn: object, event_ids: list[str]) -> None:
        seen.append(event_ids)
        if fail:
            raise RuntimeError("the owner's write failed")

    first = await space.add(datetime.now(UTC) - timedelta(seconds=1))
    relay = outbox.OutboxRelay(
        space.pool, space.js, url=space.url, schema=space.schema, on_scheduled_relayed=on_relayed
    )
    with pytest.raises(RuntimeError):
        await relay.relay_due_once()
    assert await space.counts() == (0, 1)  # nothing committed: the row is still there ...
    fail = False
    assert await relay.relay_due_once() == 1  # ... and published again (JetStream drops the copy)
    assert seen == [[first], [first]]
    assert await space.counts() == (0, 0)
    assert await relay.relay_once() == 0 and seen == [[first], [first]]  # immediate rows: no call


async def test_the_owner_may_change_or_withhold_due_rows_before_they_are_published(space: Space) -> None:
    """`prepare_scheduled`: a withheld row is deleted unpublished, a changed payload is what goes out."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    kept_id, withheld_id = await space.add(past), await space.add(past)
    relayed: list[str] = []

    async def prepare(conn: object, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**row, "payload": b"changed"} for row in rows if row["event_id"] == kept_id]

    async def on_relayed(conn: object, event_ids: list[str]) -> None:
        relayed.extend(event_ids)

    relay = outbox.OutboxRelay(
        space.pool,
        space.js,
        url=space.url,
        schema=space.schema,
        on_scheduled_relayed=on_relayed,
        prepare_scheduled=prepare,
    )
    assert await relay.relay_due_once() == 1
    assert relayed == [kept_id]
    assert await space.counts() == (0, 0)  # the withheld row is gone too
    await until(lambda: kept_id in space.arrived)
    assert withheld_id not in space.arrived
    assert space.payloads[kept_id] == b"changed"
