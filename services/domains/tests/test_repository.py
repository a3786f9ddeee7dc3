"""The domains repository's SQL (name ownership, records, the verification poller's claims) against
the real `domains` schema. Each test runs in one transaction that is rolled back at the end
(`rollback_connection`), so tests need no cleanup. Tests that claim due domains first delete every
other row inside that transaction (rows other suites may have committed), so counts are exact."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from mailroom_contracts.events import DomainRecord, DomainSnapshot
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_domains import repository as repo
from mailroom_domains.service import SCHEMA
from mailroom_kit.db import Conn, connect
from mailroom_kit.ids import new_id

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def conn(migrated: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(migrated, SCHEMA):
        yield c


@pytest.fixture
async def other_conn(migrated: str) -> AsyncIterator[Conn]:
    """A second session (another poller replica), also rolled back."""
    async for c in rollback_connection(migrated, SCHEMA):
        yield c


def unique_name() -> str:
    return f"d{secrets.token_hex(5)}.acme.test"


def records_for(name: str) -> list[DomainRecord]:
    return [
        DomainRecord(purpose="dkim", type="CNAME", name=f"t1._domainkey.{name}", value="t1.dkim.amazonses.com"),
        DomainRecord(
            purpose="mail_from_mx",
            type="MX",
            name=f"bounce.{name}",
            value="feedback-smtp.us-east-1.amazonses.com",
            priority=10,
        ),
        DomainRecord(
            purpose="mail_from_spf", type="TXT", name=f"bounce.{name}", value="v=spf1 include:amazonses.com ~all"
        ),
        DomainRecord(purpose="dmarc", type="TXT", name=f"_dmarc.{name}", value="v=DMARC1; p=none;", required=False),
    ]


async def insert(
    conn: Conn, name: str, *, tenant_id: str = "ten_a", records: list[DomainRecord] | None = None
) -> DomainSnapshot | None:
    return await repo.insert_domain(
        conn,
        domain_id=new_id("dom"),
        tenant_id=tenant_id,
        name=name,
        region="us-east-1",
        mail_from_subdomain="bounce",
        mail_from_domain=f"bounce.{name}",
        track_opens=True,
        track_clicks=False,
        records=records_for(name) if records is None else records,
    )


async def domain(conn: Conn, name: str | None = None, *, tenant_id: str = "ten_a") -> DomainSnapshot:
    snapshot = await insert(conn, name or unique_name(), tenant_id=tenant_id)
    assert snapshot is not None
    return snapshot


async def column(conn: Conn, domain_id: str, name: str) -> object:
    cur = await conn.execute(f"SELECT {name} AS v FROM domains WHERE id = %s", (domain_id,))
    row = await cur.fetchone()
    assert row is not None
    return row["v"]


async def db_now(conn: Conn) -> datetime:
    cur = await conn.execute("SELECT now() AS t")
    row = await cur.fetchone()
    assert row is not None
    t: datetime = row["t"]
    return t


async def set_next_check(conn: Conn, domain_id: str, at: datetime | str) -> None:
    await conn.execute("UPDATE domains SET next_check_at = %s WHERE id = %s", (at, domain_id))


async def only_ours(conn: Conn) -> None:
    """Hide rows committed by other suites' tests, inside this rolled-back transaction."""
    await conn.execute("DELETE FROM domains")


# --------------------------------------------------------------------------- registration


async def test_insert_domain_stores_the_domain_and_its_records_in_order(conn: Conn) -> None:
    name = unique_name()
    snapshot = await domain(conn, name)
    assert (snapshot.tenant_id, snapshot.name, snapshot.status, snapshot.region, snapshot.mail_from_domain) == (
        "ten_a",
        name,
        "pending",
        "us-east-1",
        f"bounce.{name}",
    )
    assert (snapshot.track_opens, snapshot.track_clicks, snapshot.last_checked_at) == (True, False, None)
    assert snapshot.created_at == await db_now(conn)

    stored = await repo.get_domain(conn, snapshot.domain_id)
    assert stored == snapshot
    assert stored.records == records_for(name)
    assert await repo.get_domain(conn, new_id("dom")) is None

    # a domain without records is stored too
    bare = await insert(conn, unique_name(), records=[])
    assert bare is not None and bare.records == []
    got = await repo.get_domain(conn, bare.domain_id)
    assert got is not None and got.records == []


async def test_records_keep_their_order_after_updates(conn: Conn) -> None:
    snapshot = await domain(conn)
    # rewriting the first records moves their row versions to the end of the table
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="pending",
        record_statuses=["verified", "failed", "pending", "pending"],
        failure_reason=None,
        checked_at=T0,
        next_check_in_seconds=60,
    )
    # read in heap order (no index): only ORDER BY keeps the display order now
    await conn.execute("SET LOCAL enable_indexscan = off")
    await conn.execute("SET LOCAL enable_bitmapscan = off")
    stored = await repo.get_domain(conn, snapshot.domain_id)
    assert stored is not None
    assert [(r.purpose, r.status) for r in stored.records] == [
        ("dkim", "verified"),
        ("mail_from_mx", "failed"),
        ("mail_from_spf", "pending"),
        ("dmarc", "pending"),
    ]


async def test_a_name_has_one_live_holder_across_tenants_except_failed(conn: Conn) -> None:
    name = unique_name()
    first = await domain(conn, name, tenant_id="ten_a")
    holder = await repo.find_live_holder(conn, name)
    assert holder == repo.NameHolder(domain_id=first.domain_id, tenant_id="ten_a", status="pending")

    # the race loser (same or another tenant) gets None and nothing is written
    assert await insert(conn, name, tenant_id="ten_b") is None
    assert await insert(conn, name, tenant_id="ten_a") is None
    cur = await conn.execute("SELECT count(*) AS n FROM domains WHERE name = %s", (name,))
    assert await cur.fetchone() == {"n": 1}
    assert await repo.find_live_holder(conn, unique_name()) is None

    # once failed, the name is free again (another tenant may take it); the failed row stays
    await repo.save_check(
        conn,
        first.domain_id,
        status="failed",
        record_statuses=["failed"] * 4,
        failure_reason="verification_timeout",
        checked_at=T0,
        next_check_in_seconds=60,
    )
    assert await repo.find_live_holder(conn, name) is None
    second = await domain(conn, name, tenant_id="ten_b")
    holder = await repo.find_live_holder(conn, name)
    assert holder is not None and (holder.domain_id, holder.tenant_id) == (second.domain_id, "ten_b")
    cur = await conn.execute("SELECT count(*) AS n FROM domains WHERE name = %s", (name,))
    assert await cur.fetchone() == {"n": 2}
    failed = await repo.get_domain(conn, first.domain_id)
    assert failed is not None and failed.status == "failed"


# --------------------------------------------------------------------------- verification poller


async def test_claim_due_honours_next_check_at_status_limit_and_order(conn: Conn) -> None:
    await only_ours(conn)
    now = await db_now(conn)
    oldest, older, due_now, future, failed = [await domain(conn) for _ in range(5)]
    await set_next_check(conn, oldest.domain_id, now - timedelta(hours=2))
    await set_next_check(conn, older.domain_id, now - timedelta(hours=1))
    await set_next_check(conn, due_now.domain_id, now)  # due exactly now
    await set_next_check(conn, future.domain_id, now + timedelta(seconds=1))
    await set_next_check(conn, failed.domain_id, now - timedelta(hours=3))
    await conn.execute("UPDATE domains SET status = 'failed' WHERE id = %s", (failed.domain_id,))

    # oldest first, `limit` at a time
    assert await repo.claim_due(conn, limit=1, lease_seconds=120) == [oldest.domain_id]
    claimed = await repo.claim_due(conn, limit=10, lease_seconds=120)
    assert sorted(claimed) == sorted([older.domain_id, due_now.domain_id])

    # the lease pushes them ahead: nothing is due any more
    for d in (oldest, older, due_now):
        assert await column(conn, d.domain_id, "next_check_at") == now + timedelta(seconds=120)
    assert await column(conn, future.domain_id, "next_check_at") == now + timedelta(seconds=1)
    assert await repo.claim_due(conn, limit=10, lease_seconds=120) == []

    # a lease that ran out (the replica holding it died) is claimed again
    await set_next_check(conn, older.domain_id, now - timedelta(seconds=1))
    assert await repo.claim_due(conn, limit=10, lease_seconds=30.5) == [older.domain_id]
    assert await column(conn, older.domain_id, "next_check_at") == now + timedelta(seconds=30.5)


async def test_claim_due_skips_domains_another_replica_is_claiming(migrated: str, conn: Conn, other_conn: Conn) -> None:
    """Two pollers at once: rows the first one locked are skipped by the second, which does not
    wait. The rows must be committed for both sessions to see them, so they are written by their own
    connection (unique names) and deleted afterwards."""
    setup = await connect(migrated, SCHEMA, autocommit=True)
    ids: list[str] = []
    try:
        for due in ("1970-01-01", "1970-01-02"):
            snapshot = await domain(setup)
            ids.append(snapshot.domain_id)
            await set_next_check(setup, snapshot.domain_id, due)
        first, second = ids

        assert await repo.claim_due(conn, limit=1, lease_seconds=120) == [first]  # the oldest, now row-locked
        await other_conn.execute("SET statement_timeout = '2s'")  # a wait would fail, not hang
        claimed = await repo.claim_due(other_conn, limit=1000, lease_seconds=120)
        assert second in claimed
        assert first not in claimed
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM domains WHERE id = ANY(%s)", (ids,))
        await setup.close()


async def test_save_check_stores_the_outcome(conn: Conn) -> None:
    snapshot = await domain(conn)
    created = await column(conn, snapshot.domain_id, "updated_at")

    # no status change: updated_at stays, the check time and the next check move
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="pending",
        record_statuses=["pending"] * 4,
        failure_reason=None,
        checked_at=T0,
        next_check_in_seconds=60,
    )
    assert await column(conn, snapshot.domain_id, "updated_at") == created
    assert await column(conn, snapshot.domain_id, "last_checked_at") == T0
    assert await column(conn, snapshot.domain_id, "next_check_at") == T0 + timedelta(seconds=60)

    t1 = T0 + timedelta(minutes=1)
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="temporary_failure",
        record_statuses=["verified", "failed", "pending", "pending"],
        failure_reason="dkim_lookup_failed",
        checked_at=t1,
        next_check_in_seconds=0.5,
    )
    assert await column(conn, snapshot.domain_id, "updated_at") == t1
    assert await column(conn, snapshot.domain_id, "failure_reason") == "dkim_lookup_failed"
    assert await column(conn, snapshot.domain_id, "verified_at") is None
    assert await column(conn, snapshot.domain_id, "next_check_at") == t1 + timedelta(seconds=0.5)

    t2 = T0 + timedelta(minutes=2)
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="verified",
        record_statuses=["verified"] * 4,
        failure_reason=None,
        checked_at=t2,
        next_check_in_seconds=3600,
    )
    assert await column(conn, snapshot.domain_id, "failure_reason") is None  # verified again: reason cleared
    t3 = T0 + timedelta(minutes=3)
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="verified",
        record_statuses=["verified"] * 4,
        failure_reason=None,
        checked_at=t3,
        next_check_in_seconds=3600,
    )
    stored = await repo.get_domain(conn, snapshot.domain_id)
    assert stored is not None
    assert (stored.status, stored.last_checked_at) == ("verified", t3)
    assert [r.status for r in stored.records] == ["verified"] * 4
    # verified_at is the first time it became verified; updated_at the last status change
    assert await column(conn, snapshot.domain_id, "verified_at") == t2
    assert await column(conn, snapshot.domain_id, "updated_at") == t2
    assert await column(conn, snapshot.domain_id, "next_check_at") == t3 + timedelta(hours=1)


async def test_save_check_touches_only_its_own_records(conn: Conn) -> None:
    mine, other = await domain(conn), await domain(conn)
    await repo.save_check(
        conn,
        mine.domain_id,
        status="pending",
        record_statuses=["failed"] * 4,
        failure_reason=None,
        checked_at=T0,
        next_check_in_seconds=60,
    )
    untouched = await repo.get_domain(conn, other.domain_id)
    assert untouched is not None
    assert untouched.status == "pending" and [r.status for r in untouched.records] == ["pending"] * 4
    assert await column(conn, other.domain_id, "last_checked_at") is None


async def test_postpone_check_pushes_next_check_unless_failed(conn: Conn) -> None:
    live, failed = await domain(conn), await domain(conn)
    await conn.execute("UPDATE domains SET status = 'failed', next_check_at = %s WHERE id = %s", (T0, failed.domain_id))
    now = await db_now(conn)
    await repo.postpone_check(conn, live.domain_id, seconds=2.5)
    await repo.postpone_check(conn, failed.domain_id, seconds=2.5)
    assert await column(conn, live.domain_id, "next_check_at") == now + timedelta(seconds=2.5)
    assert await column(conn, failed.domain_id, "next_check_at") == T0


async def test_lock_domain_reads_a_clock_never_before_the_last_check(conn: Conn) -> None:
    snapshot = await domain(conn)
    locked = await repo.lock_domain(conn, snapshot.domain_id)
    assert locked is not None
    assert locked.snapshot == snapshot
    # clock_timestamp(), not the transaction's start: it is read once the lock is held
    assert locked.db_now > await db_now(conn)

    # a check recorded "in the future" (another replica's clock ahead) is never moved back
    ahead = datetime.now(UTC) + timedelta(hours=1)
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="pending",
        record_statuses=["pending"] * 4,
        failure_reason=None,
        checked_at=ahead,
        next_check_in_seconds=60,
    )
    locked = await repo.lock_domain(conn, snapshot.domain_id)
    assert locked is not None and locked.db_now == ahead
    assert locked.snapshot.last_checked_at == ahead
    assert await repo.lock_domain(conn, new_id("dom")) is None


async def test_lock_domain_blocks_a_concurrent_check(migrated: str, conn: Conn, other_conn: Conn) -> None:
    """`lock_domain` is SELECT … FOR UPDATE: a second check of the same domain waits. The row is
    committed by its own connection so both sessions see it, and deleted afterwards."""
    setup = await connect(migrated, SCHEMA, autocommit=True)
    snapshot = await domain(setup)
    try:
        assert await repo.lock_domain(conn, snapshot.domain_id) is not None
        await other_conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await repo.lock_domain(other_conn, snapshot.domain_id)
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM domains WHERE id = %s", (snapshot.domain_id,))
        await setup.close()


async def test_checks_are_numbered_in_the_order_they_begin_and_the_applied_one_is_kept(conn: Conn) -> None:
    snapshot = await domain(conn)
    other = await domain(conn)
    first = await repo.start_check(conn, snapshot.domain_id)
    second = await repo.start_check(conn, snapshot.domain_id)
    assert first is not None and second is not None
    assert first[0] == snapshot and (first[1], second[1]) == (1, 2)
    assert (await repo.start_check(conn, other.domain_id) or (None, 0))[1] == 1  # per domain
    assert await repo.start_check(conn, new_id("dom")) is None

    locked = await repo.lock_domain(conn, snapshot.domain_id)
    assert locked is not None and locked.applied_check_seq == 0  # nothing applied yet
    await repo.save_check(
        conn,
        snapshot.domain_id,
        status="pending",
        record_statuses=["pending"] * 4,
        failure_reason=None,
        checked_at=datetime.now(UTC),
        next_check_in_seconds=60,
        check_seq=second[1],
    )
    locked = await repo.lock_domain(conn, snapshot.domain_id)
    assert locked is not None and locked.applied_check_seq == 2
