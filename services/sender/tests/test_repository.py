"""The sender repository's SQL (the `deliveries` state machine) against the real `sender` schema.
Each test runs in one transaction that is rolled back at the end (`rollback_connection`), so tests
need no cleanup. Inside one transaction `now()` is constant, which makes the in-doubt arithmetic
exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit.db import Conn, connect
from mailroom_kit.ids import new_id
from mailroom_sender import repository as repo
from mailroom_sender.service import SCHEMA

from .conftest import queued


@pytest.fixture
async def conn(sender_db: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(sender_db, SCHEMA):
        yield c


@pytest.fixture
async def other_conn(sender_db: str) -> AsyncIterator[Conn]:
    """A second session (another sender replica), also rolled back."""
    async for c in rollback_connection(sender_db, SCHEMA):
        yield c


async def db_now(conn: Conn) -> datetime:
    cur = await conn.execute("SELECT now() AS t")
    row = await cur.fetchone()
    assert row is not None
    t: datetime = row["t"]
    return t


async def new_delivery(conn: Conn, *, mode: str = "live", recipients: list[str] | None = None) -> str:
    email_id = new_id("msg")
    await repo.insert_if_missing(
        conn, email_id=email_id, tenant_id="ten_a", mode=mode, recipients=recipients or ["a@example.org"]
    )
    return email_id


async def test_insert_if_missing_is_idempotent(conn: Conn) -> None:
    email_id = await new_delivery(conn, recipients=["a@example.org", "b@example.org"])
    # a redelivered EmailQueued never resets or rewrites the row
    await repo.start_attempt(conn, email_id, provider="ses")
    await repo.insert_if_missing(conn, email_id=email_id, tenant_id="ten_b", mode="test", recipients=["x@example.org"])

    row = await repo.get(conn, email_id)
    assert row is not None
    assert (row.tenant_id, row.mode, row.recipients, row.state, row.attempts) == (
        "ten_a",
        "live",
        ["a@example.org", "b@example.org"],
        "sending",
        1,
    )
    cur = await conn.execute("SELECT count(*) AS n FROM deliveries WHERE email_id = %s", (email_id,))
    assert await cur.fetchone() == {"n": 1}
    assert await repo.get(conn, new_id("msg")) is None


async def test_new_delivery_defaults_and_lock(conn: Conn) -> None:
    email_id = await new_delivery(conn, mode="test")
    locked = await repo.lock(conn, email_id, in_doubt_seconds=600)
    assert locked is not None
    d = locked.delivery
    assert (d.email_id, d.tenant_id, d.mode, d.state, d.attempts) == (email_id, "ten_a", "test", "pending", 0)
    assert (d.attempt_started_at, d.provider, d.provider_message_id, d.failure_reason) == (None, None, None, None)
    assert d.created_at == d.updated_at == await db_now(conn)
    # no attempt yet: nothing is in doubt
    assert locked.in_doubt_remaining is None
    assert await repo.lock(conn, new_id("msg")) is None


async def test_start_attempt_counts_attempts_and_in_doubt_time(conn: Conn) -> None:
    email_id = await new_delivery(conn)
    assert await repo.start_attempt(conn, email_id, provider="ses") == 1
    now = await db_now(conn)

    locked = await repo.lock(conn, email_id, in_doubt_seconds=600)
    assert locked is not None
    assert (locked.delivery.state, locked.delivery.provider, locked.delivery.attempt_started_at) == (
        "sending",
        "ses",
        now,
    )
    assert locked.in_doubt_remaining == pytest.approx(600.0, abs=1e-6)

    # the attempt started 100.5 s ago: 499.5 s remain; 700 s ago: expired 100 s ago
    await conn.execute(
        "UPDATE deliveries SET attempt_started_at = now() - interval '100.5 seconds' WHERE email_id = %s",
        (email_id,),
    )
    locked = await repo.lock(conn, email_id, in_doubt_seconds=600)
    assert locked is not None and locked.in_doubt_remaining == pytest.approx(499.5, abs=1e-6)
    locked = await repo.lock(conn, email_id, in_doubt_seconds=0.25)
    assert locked is not None and locked.in_doubt_remaining == pytest.approx(-100.25, abs=1e-6)
    await conn.execute(
        "UPDATE deliveries SET attempt_started_at = now() - interval '700 seconds' WHERE email_id = %s", (email_id,)
    )
    locked = await repo.lock(conn, email_id, in_doubt_seconds=600)
    assert locked is not None and locked.in_doubt_remaining == pytest.approx(-100.0, abs=1e-6)

    # taking over an in-doubt send starts attempt 2 from now
    assert await repo.start_attempt(conn, email_id, provider="ses") == 2
    locked = await repo.lock(conn, email_id, in_doubt_seconds=600)
    assert locked is not None
    assert (locked.delivery.attempts, locked.delivery.attempt_started_at) == (2, now)
    assert locked.in_doubt_remaining == pytest.approx(600.0, abs=1e-6)

    with pytest.raises(LookupError):
        await repo.start_attempt(conn, new_id("msg"), provider="ses")


async def test_mark_sent_settles_and_clears_failure(conn: Conn) -> None:
    email_id = await new_delivery(conn)
    other = await new_delivery(conn)
    attempt = await repo.start_attempt(conn, email_id, provider="ses")
    assert await repo.release_attempt(conn, email_id, attempt=attempt, reason="throttled")
    await repo.start_attempt(conn, email_id, provider="ses")

    await repo.mark_sent(conn, email_id, provider="ses", provider_message_id="0100-abc")
    row = await repo.get(conn, email_id)
    assert row is not None
    assert (row.state, row.provider, row.provider_message_id, row.failure_reason, row.attempts) == (
        "sent",
        "ses",
        "0100-abc",
        None,
        2,
    )
    untouched = await repo.get(conn, other)
    assert untouched is not None and (untouched.state, untouched.provider_message_id) == ("pending", None)


async def test_mark_failed(conn: Conn) -> None:
    email_id = await new_delivery(conn)
    await repo.mark_failed(conn, email_id, reason="invalid_from")
    row = await repo.get(conn, email_id)
    assert row is not None and (row.state, row.failure_reason, row.attempts) == ("failed", "invalid_from", 0)


async def test_release_attempt_only_for_the_current_attempt_in_flight(conn: Conn) -> None:
    email_id = await new_delivery(conn)
    # nothing in flight yet
    assert not await repo.release_attempt(conn, email_id, attempt=0, reason="x")
    first = await repo.start_attempt(conn, email_id, provider="ses")
    second = await repo.start_attempt(conn, email_id, provider="ses")  # someone took over
    assert (first, second) == (1, 2)

    # the stale attempt may not put it back
    assert not await repo.release_attempt(conn, email_id, attempt=first, reason="stale")
    row = await repo.get(conn, email_id)
    assert row is not None and (row.state, row.failure_reason) == ("sending", None)

    assert await repo.release_attempt(conn, email_id, attempt=second, reason="connection reset")
    row = await repo.get(conn, email_id)
    assert row is not None and (row.state, row.attempts, row.failure_reason) == ("pending", 2, "connection reset")
    # already released: no second transition
    assert not await repo.release_attempt(conn, email_id, attempt=second, reason="again")

    # a settled send is never put back
    third = await repo.start_attempt(conn, email_id, provider="ses")
    await repo.mark_sent(conn, email_id, provider="ses", provider_message_id="m")
    assert not await repo.release_attempt(conn, email_id, attempt=third, reason="late")
    row = await repo.get(conn, email_id)
    assert row is not None and row.state == "sent"
    assert not await repo.release_attempt(conn, new_id("msg"), attempt=1, reason="unknown")


async def test_lock_holds_the_row_against_another_replica(sender_db: str, conn: Conn, other_conn: Conn) -> None:
    """`lock` is SELECT … FOR UPDATE: a second session waits for it. The row must be committed for
    the second session to see it at all, so it is written by its own connection (unique id) and
    deleted afterwards."""
    email_id = new_id("msg")
    setup = await connect(sender_db, SCHEMA, autocommit=True)
    try:
        await repo.insert_if_missing(setup, email_id=email_id, tenant_id="ten_a", mode="live", recipients=["a@b.c"])

        assert await repo.lock(conn, email_id) is not None
        await other_conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await repo.lock(other_conn, email_id)
        await other_conn.rollback()

        await conn.rollback()  # the first replica's transaction ends: the row is free again
        locked = await repo.lock(other_conn, email_id)
        assert locked is not None and locked.delivery.state == "pending"
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM deliveries WHERE email_id = %s", (email_id,))
        await setup.close()


async def test_updated_at_moves_with_each_transition(conn: Conn) -> None:
    email_id = await new_delivery(conn)
    now = await db_now(conn)
    past = now - timedelta(hours=1)
    reset = "UPDATE deliveries SET updated_at = %s WHERE email_id = %s"

    for step in (
        lambda: repo.start_attempt(conn, email_id, provider="ses"),
        lambda: repo.release_attempt(conn, email_id, attempt=1, reason="r"),
        lambda: repo.mark_sent(conn, email_id, provider="ses", provider_message_id="m"),
        lambda: repo.mark_failed(conn, email_id, reason="f"),
    ):
        await conn.execute(reset, (past, email_id))
        await step()
        row = await repo.get(conn, email_id)
        assert row is not None and row.updated_at == now


async def test_insert_and_lock_reads_and_share_locks_the_tenant_status(
    sender_db: str, conn: Conn, other_conn: Conn
) -> None:
    """issue 15: the claim statement returns the tenant's status (active when the sender never saw
    the tenant change) and holds the tenant's share lock, so a status change waits for the send
    decision as it did when `tenant_status` was a statement of its own."""
    tenant = new_id("ten")
    setup = await connect(sender_db, SCHEMA, autocommit=True)
    try:
        unknown = await repo.insert_and_lock(
            conn, email_id=new_id("msg"), tenant_id=new_id("ten"), mode="live", recipients=["a@b.c"], in_doubt_seconds=1
        )
        assert unknown.tenant_status == "active"
        assert await repo.apply_tenant(
            setup, tenant_id=tenant, status="paused", status_reason=None, updated_at=datetime(2026, 1, 1)
        )
        locked = await repo.insert_and_lock(
            conn, email_id=new_id("msg"), tenant_id=tenant, mode="live", recipients=["a@b.c"], in_doubt_seconds=1
        )
        assert (locked.tenant_status, locked.delivery.state) == ("paused", "pending")
        await other_conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await repo.apply_tenant(
                other_conn, tenant_id=tenant, status="active", status_reason=None, updated_at=datetime(2026, 1, 2)
            )
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM tenants WHERE tenant_id = %s", (tenant,))
        await setup.close()


async def test_insert_and_lock_creates_or_returns_the_row_and_locks_it(
    sender_db: str, conn: Conn, other_conn: Conn
) -> None:
    """One statement for TX1: a new row is created pending; an existing one comes back unchanged
    (a redelivery never rewrites it) and locked against another replica, as `lock` does."""
    email_id = new_id("msg")
    setup = await connect(sender_db, SCHEMA, autocommit=True)
    try:
        created = await repo.insert_and_lock(
            setup, email_id=email_id, tenant_id="ten_a", mode="live", recipients=["a@b.c"], in_doubt_seconds=600
        )
        assert (created.delivery.state, created.delivery.attempts, created.in_doubt_remaining) == ("pending", 0, None)
        await repo.start_attempt(setup, email_id, provider="ses")

        again = await repo.insert_and_lock(
            conn, email_id=email_id, tenant_id="ten_b", mode="test", recipients=["x@y.z"], in_doubt_seconds=600
        )
        row = again.delivery
        assert (row.tenant_id, row.mode, row.recipients, row.state, row.attempts) == (
            "ten_a",
            "live",
            ["a@b.c"],
            "sending",
            1,
        )
        assert again.in_doubt_remaining is not None and 590 < again.in_doubt_remaining <= 600
        await other_conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await repo.insert_and_lock(
                other_conn, email_id=email_id, tenant_id="ten_a", mode="live", recipients=[], in_doubt_seconds=1
            )
        await other_conn.rollback()
        await other_conn.execute("SET lock_timeout = '200ms'")  # the rollback undid the SET
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await repo.lock(other_conn, email_id)
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM deliveries WHERE email_id = %s", (email_id,))
        await setup.close()


async def test_mark_sent_unless_settled_settles_only_an_unsettled_row(conn: Conn) -> None:
    email_id = await new_delivery(conn)
    await repo.start_attempt(conn, email_id, provider="ses")
    sent = await repo.mark_sent_unless_settled(conn, email_id, provider="ses", provider_message_id="pm-1")
    assert sent is not None and (sent.state, sent.provider_message_id, sent.recipients) == (
        "sent",
        "pm-1",
        ["a@example.org"],
    )
    assert await repo.mark_sent_unless_settled(conn, email_id, provider="ses", provider_message_id="pm-2") is None
    failed = await new_delivery(conn)
    await repo.mark_failed(conn, failed, reason="invalid_message")
    assert await repo.mark_sent_unless_settled(conn, failed, provider="ses", provider_message_id="pm-3") is None
    row = await repo.get(conn, email_id)
    assert row is not None and row.provider_message_id == "pm-1"
    failed_row = await repo.get(conn, failed)
    assert failed_row is not None and failed_row.state == "failed"
    assert await repo.mark_sent_unless_settled(conn, new_id("msg"), provider="ses", provider_message_id="x") is None


async def test_purge_deletes_old_settled_deliveries_only(conn: Conn) -> None:
    ids = {state: await new_delivery(conn) for state in ("sent", "failed", "sending", "pending")}
    recent_sent = await new_delivery(conn)
    await conn.execute("UPDATE deliveries SET state = 'sent' WHERE email_id = %s", (recent_sent,))
    for state, email_id in ids.items():
        await conn.execute(
            "UPDATE deliveries SET state = %s, created_at = now() - interval '40 days' WHERE email_id = %s",
            (state, email_id),
        )
    assert await repo.purge_settled(conn, await db_now(conn) - timedelta(days=30), 100) == 2
    cur = await conn.execute(
        "SELECT email_id FROM deliveries WHERE email_id = ANY(%s)", ([*ids.values(), recent_sent],)
    )
    left = {row["email_id"] for row in await cur.fetchall()}
    # in doubt or not yet sent: kept whatever their age; recent: kept
    assert left == {ids["sending"], ids["pending"], recent_sent}


async def test_queue_by_stream_and_tenant_counts_streams_and_paused_tenants(conn: Conn) -> None:
    """issue 23, the operator API's per-stream and per-tenant counts: the stream is the row's (hold,
    defer write it); a row held before migration 0007 (no stream) is read from its EmailQueued."""
    active, paused = new_id("ten"), new_id("ten")
    await repo.apply_tenant(conn, tenant_id=paused, status="paused", status_reason=None, updated_at=datetime.now(UTC))

    async def held(tenant_id: str, stream: str, *, column: bool) -> None:
        email = queued(tenant_id=tenant_id, stream=stream)
        await repo.insert_if_missing(conn, email_id=email.email_id, tenant_id=tenant_id, mode="live", recipients=[])
        payload = msgspec.json.encode(email)
        await repo.hold(conn, email.email_id, queued_event=payload, stream=stream if column else None)

    await held(active, "broadcast", column=True)
    await held(active, "broadcast", column=False)  # pre-0007 row: parsed
    await held(active, "transactional", column=True)
    await held(paused, "transactional", column=True)
    rows = [r for r in await repo.queue_by_stream_and_tenant(conn) if r["tenant_id"] in (active, paused)]
    assert sorted((r["tenant_id"] == paused, r["stream"], r["paused"], r["n"]) for r in rows) == [
        (False, "broadcast", False, 2),
        (False, "transactional", False, 1),
        (True, "transactional", True, 1),
    ]


async def test_queue_backlog_stores_each_event_as_published_and_leaves_existing_rows(conn: Conn) -> None:
    """issue 23's bulk hand-over: one statement; every byte of the event, the recipients in order and
    the stream arrive in the row; an email that has a row already is not returned (nor changed)."""
    tenant = new_id("ten")
    emails = [queued(tenant_id=tenant, stream="broadcast" if i % 2 else "transactional") for i in range(3)]
    await repo.insert_if_missing(conn, email_id=emails[2].email_id, tenant_id=tenant, mode="live", recipients=[])
    payloads = [msgspec.json.encode(e) + b"\x00\xff binary tail" for e in emails]
    rows = [
        repo.Backlogged(
            email_id=e.email_id,
            tenant_id=tenant,
            mode="live",
            recipients=[f"a{i}@x.test", f"b{i}@x.test"],
            queued_event=p,
            stream=e.stream,
        )
        for i, (e, p) in enumerate(zip(emails, payloads, strict=True))
    ]
    assert await repo.queue_backlog(conn, rows) == {emails[0].email_id, emails[1].email_id}
    cur = await conn.execute(
        "SELECT email_id, recipients, state, queued_event, stream, attempts FROM deliveries WHERE tenant_id = %s",
        (tenant,),
    )
    got = {r["email_id"]: r for r in await cur.fetchall()}
    for i in (0, 1):
        row = got[emails[i].email_id]
        assert bytes(row["queued_event"]) == payloads[i]
        assert row["recipients"] == [f"a{i}@x.test", f"b{i}@x.test"]
        assert (row["state"], row["stream"], row["attempts"]) == ("held", emails[i].stream, 0)
    assert got[emails[2].email_id]["queued_event"] is None  # the existing row, untouched


async def test_sent_with_events_writes_the_events_only_when_it_settles_the_row(conn: Conn) -> None:
    """issue 15: TX2 in one statement: → sent and the events into the outbox (in order), or, for a
    row settled already, nothing at all."""
    email_id = await new_delivery(conn)
    attempt, started_at = await repo.start_attempt_at(conn, email_id, provider="ses")
    assert (attempt, started_at) == (1, await db_now(conn))
    rows = [(new_id("evt"), "mailroom.email.sent", b'{"n":1}'), (new_id("evt"), "mailroom.email.delivered", b"{}")]
    assert await repo.mark_sent_with_events(
        conn, email_id, provider="ses", provider_message_id="ses-1", outbox_rows=rows, channel="sender_outbox"
    )
    stored = await repo.get(conn, email_id)
    assert stored is not None and (stored.state, stored.provider_message_id) == ("sent", "ses-1")
    cur = await conn.execute(
        "SELECT event_id, subject, payload FROM outbox WHERE event_id = ANY(%s) ORDER BY id", ([r[0] for r in rows],)
    )
    assert [(r["event_id"], r["subject"], bytes(r["payload"])) for r in await cur.fetchall()] == rows
    # Settled already (sent, or failed, or unknown): nothing is written.
    again = [(new_id("evt"), "mailroom.email.sent", b"{}")]
    failed = await new_delivery(conn)
    await repo.mark_failed(conn, failed, reason="message_rejected")
    for settled in (email_id, failed, new_id("msg")):
        assert not await repo.mark_sent_with_events(
            conn, settled, provider="ses", provider_message_id="ses-2", outbox_rows=again, channel="sender_outbox"
        )
    cur = await conn.execute("SELECT count(*) AS n FROM outbox WHERE event_id = %s", (again[0][0],))
    assert await cur.fetchone() == {"n": 0}
    stored = await repo.get(conn, email_id)
    assert stored is not None and stored.provider_message_id == "ses-1"
