"""The webhooks repository's SQL (endpoints, email summaries, deliveries and their claims, attempts)
against the real `webhooks` schema. Each test runs in one transaction that is rolled back at the end
(`rollback_connection`), so tests need no cleanup. Tests that claim deliveries first delete every
other row inside that transaction (rows other tests may have left), so counts are exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit import inbox
from mailroom_kit.db import Conn, connect
from mailroom_kit.ids import new_id
from mailroom_webhooks import repository as repo
from mailroom_webhooks.app import SCHEMA

T0 = datetime(2030, 1, 1, tzinfo=UTC)
PAST = datetime(2000, 1, 1, tzinfo=UTC)  # due long ago


@pytest.fixture
async def conn(webhooks_db: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(webhooks_db, SCHEMA):
        yield c


@pytest.fixture
async def other_conn(webhooks_db: str) -> AsyncIterator[Conn]:
    """A second session (another dispatcher replica), also rolled back."""
    async for c in rollback_connection(webhooks_db, SCHEMA):
        yield c


async def db_now(conn: Conn) -> datetime:
    cur = await conn.execute("SELECT now() AS t")
    row = await cur.fetchone()
    assert row is not None
    t: datetime = row["t"]
    return t


async def endpoint(conn: Conn, tenant_id: str = "ten_a", *, events: list[str] | None = None) -> str:
    endpoint_id = new_id("wh")
    row = await repo.insert_endpoint(
        conn,
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        url=f"https://hooks.example.org/{endpoint_id}",
        events=events or ["*"],
        description="orders",
        secret_encrypted=f"enc-{endpoint_id}",
    )
    assert row["id"] == endpoint_id
    return endpoint_id


async def delivery(
    conn: Conn, endpoint_id: str, *, event_id: str | None = None, due: datetime | None = None, tenant_id: str = "ten_a"
) -> str:
    delivery_id = new_id("whd")
    event_id = event_id or new_id("evt")
    assert await repo.insert_delivery(
        conn,
        delivery_id=delivery_id,
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="email.sent",
        payload=b'{"type": "email.sent"}',
    )
    if due is not None:
        await conn.execute("UPDATE deliveries SET next_attempt_at = %s WHERE id = %s", (due, delivery_id))
    return delivery_id


async def row(conn: Conn, delivery_id: str) -> dict[str, Any]:
    cur = await conn.execute("SELECT * FROM deliveries WHERE id = %s", (delivery_id,))
    found = await cur.fetchone()
    assert found is not None
    return found


async def only_ours(conn: Conn) -> None:
    """Hide rows other tests committed, inside this rolled-back transaction."""
    await conn.execute("DELETE FROM delivery_attempts")
    await conn.execute("DELETE FROM deliveries")
    await conn.execute("DELETE FROM endpoints")


async def claim(conn: Conn, *, limit: int = 100, per_endpoint: int = 100, lease: float = 60) -> list[str]:
    return [
        r["id"]
        for r in await repo.claim_due_deliveries(conn, limit=limit, per_endpoint=per_endpoint, lease_seconds=lease)
    ]


# ----------------------------------------------------------------------------- endpoints


async def test_endpoints_are_scoped_by_tenant_and_soft_deleted(conn: Conn) -> None:
    a1 = await endpoint(conn, "ten_a", events=["email.sent", "email.bounced"])
    a2 = await endpoint(conn, "ten_a")
    b1 = await endpoint(conn, "ten_b")

    listed = await repo.list_endpoints(conn, "ten_a")
    assert [r["id"] for r in listed] == sorted([a1, a2], reverse=True)
    first = next(r for r in listed if r["id"] == a1)
    assert (first["events"], first["description"], first["enabled"]) == (
        ["email.sent", "email.bounced"],
        "orders",
        True,
    )
    assert "secret_encrypted" not in first  # the API never reads the secret back
    assert [r["id"] for r in await repo.list_endpoints(conn, "ten_b")] == [b1]

    got = await repo.get_endpoint(conn, "ten_a", a1)
    assert got is not None and got["url"] == f"https://hooks.example.org/{a1}"
    assert await repo.get_endpoint(conn, "ten_b", a1) is None

    # another tenant cannot delete it
    assert await repo.soft_delete_endpoint(conn, "ten_b", a1) is None
    deleted = await repo.soft_delete_endpoint(conn, "ten_a", a1)
    assert deleted is not None and (deleted["id"], deleted["enabled"]) == (a1, False)
    assert await repo.soft_delete_endpoint(conn, "ten_a", a1) is None  # already gone
    assert await repo.get_endpoint(conn, "ten_a", a1) is None
    assert [r["id"] for r in await repo.list_endpoints(conn, "ten_a")] == [a2]
    # the row is kept (its deliveries reference it)
    cur = await conn.execute("SELECT deleted_at IS NOT NULL AS gone FROM endpoints WHERE id = %s", (a1,))
    assert await cur.fetchone() == {"gone": True}


async def test_subscribed_endpoint_ids(conn: Conn) -> None:
    sent_only = await endpoint(conn, "ten_s", events=["email.sent"])
    everything = await endpoint(conn, "ten_s", events=["*"])
    bounced_only = await endpoint(conn, "ten_s", events=["email.bounced"])
    disabled = await endpoint(conn, "ten_s", events=["*"])
    deleted = await endpoint(conn, "ten_s", events=["email.sent"])
    await endpoint(conn, "ten_other", events=["*"])
    await repo.disable_endpoint(conn, disabled, "gone")
    await repo.soft_delete_endpoint(conn, "ten_s", deleted)
    # deletion alone keeps an endpoint out, whatever its `enabled` flag says
    await conn.execute("UPDATE endpoints SET enabled = true WHERE id = %s", (deleted,))

    assert await repo.subscribed_endpoint_ids(conn, "ten_s", "email.sent") == sorted([sent_only, everything])
    assert await repo.subscribed_endpoint_ids(conn, "ten_s", "email.bounced") == sorted([everything, bounced_only])
    assert await repo.subscribed_endpoint_ids(conn, "ten_s", "domain.verified") == [everything]
    assert await repo.subscribed_endpoint_ids(conn, "ten_nobody", "email.sent") == []
    cur = await conn.execute("SELECT enabled, disabled_reason FROM endpoints WHERE id = %s", (disabled,))
    assert await cur.fetchone() == {"enabled": False, "disabled_reason": "gone"}


# ----------------------------------------------------------------------------- inbox and summaries


async def test_inbox_claim_once_per_consumer(conn: Conn) -> None:
    event_id = new_id("evt")
    assert await inbox.claim(conn, "webhooks-email", event_id)
    assert not await inbox.claim(conn, "webhooks-email", event_id)
    assert await inbox.claim(conn, "webhooks-domain", event_id)


# ----------------------------------------------------------------------------- deliveries


async def test_delivery_is_unique_per_endpoint_and_event(conn: Conn) -> None:
    first, second = await endpoint(conn), await endpoint(conn)
    event_id = new_id("evt")
    delivery_id = await delivery(conn, first, event_id=event_id)
    # the same event to the same endpoint again (a redelivered event) is refused
    assert not await repo.insert_delivery(
        conn,
        delivery_id=new_id("whd"),
        endpoint_id=first,
        tenant_id="ten_a",
        event_id=event_id,
        event_type="email.sent",
        payload=b"{}",
    )
    # to another endpoint it is a delivery of its own
    await delivery(conn, second, event_id=event_id)
    cur = await conn.execute(
        "SELECT endpoint_id, id FROM deliveries WHERE event_id = %s ORDER BY endpoint_id", (event_id,)
    )
    rows = await cur.fetchall()
    assert [r["endpoint_id"] for r in rows] == sorted([first, second])
    assert delivery_id in {r["id"] for r in rows}
    stored = await row(conn, delivery_id)
    assert (stored["status"], stored["attempts"], bytes(stored["payload"])) == ("pending", 0, b'{"type": "email.sent"}')
    assert stored["next_attempt_at"] == await db_now(conn)


async def test_claim_due_deliveries_honours_due_time_and_endpoint_state(conn: Conn) -> None:
    await only_ours(conn)
    now = await db_now(conn)
    live, disabled, deleted = await endpoint(conn), await endpoint(conn), await endpoint(conn)
    due = await delivery(conn, live, due=now - timedelta(seconds=5))
    due_now = await delivery(conn, live)  # next_attempt_at defaults to now()
    later = await delivery(conn, live, due=now + timedelta(seconds=1))
    await delivery(conn, disabled, due=now - timedelta(seconds=5))
    await delivery(conn, deleted, due=now - timedelta(seconds=5))
    done = await delivery(conn, live, due=now - timedelta(seconds=5))
    await conn.execute("UPDATE deliveries SET status = 'succeeded' WHERE id = %s", (done,))
    await repo.disable_endpoint(conn, disabled, "gone")
    await repo.soft_delete_endpoint(conn, "ten_a", deleted)
    await conn.execute("UPDATE endpoints SET enabled = true WHERE id = %s", (deleted,))  # deletion alone counts

    claimed = await repo.claim_due_deliveries(conn, limit=10, per_endpoint=10, lease_seconds=30)
    assert [c["id"] for c in claimed] == [due, due_now]  # oldest first
    first = claimed[0]
    assert (first["endpoint_id"], first["event_id"] is not None, bytes(first["payload"]), first["attempts"]) == (
        live,
        True,
        b'{"type": "email.sent"}',
        1,
    )
    assert (first["url"], first["secret_encrypted"]) == (f"https://hooks.example.org/{live}", f"enc-{live}")
    stored = await row(conn, due)
    assert (stored["status"], stored["attempts"], stored["lease_expires_at"]) == (
        "in_flight",
        1,
        now + timedelta(seconds=30),
    )
    assert (await row(conn, later))["status"] == "pending"

    # claimed and leased: nothing more is due
    assert await claim(conn) == []

    # the lease of `due` ran out (its dispatcher died): claimed again, as attempt 2
    await conn.execute("UPDATE deliveries SET lease_expires_at = now() - interval '1 ms' WHERE id = %s", (due,))
    again = await repo.claim_due_deliveries(conn, limit=10, per_endpoint=10, lease_seconds=30)
    assert [(c["id"], c["attempts"]) for c in again] == [(due, 2)]


async def test_claim_due_deliveries_respects_limit_and_per_endpoint_bound(conn: Conn) -> None:
    await only_ours(conn)
    now = await db_now(conn)
    busy, quiet = await endpoint(conn), await endpoint(conn)
    busy_ids = [await delivery(conn, busy, due=now - timedelta(seconds=10 - i)) for i in range(4)]
    quiet_ids = [await delivery(conn, quiet, due=now - timedelta(seconds=5 - i)) for i in range(2)]

    # at most 2 per endpoint, and `limit` overall (oldest first)
    assert await claim(conn, limit=3, per_endpoint=2) == [busy_ids[0], busy_ids[1], quiet_ids[0]]
    # `busy` already has 2 live claims: none more for it; `quiet` has 1, so one more
    assert await claim(conn, limit=10, per_endpoint=2) == [quiet_ids[1]]
    # an expired lease frees its slot (and is itself claimable again)
    await conn.execute("UPDATE deliveries SET lease_expires_at = now() WHERE id = %s", (busy_ids[0],))
    assert await claim(conn, limit=10, per_endpoint=2) == [busy_ids[0]]
    assert await claim(conn, limit=10, per_endpoint=3) == [busy_ids[2]]


async def test_one_emails_deliveries_to_an_endpoint_are_claimed_one_at_a_time_in_order(conn: Conn) -> None:
    """A delivery waits while an earlier one (lower seq) of the same endpoint and order key is
    pending or in flight, whatever their due times; other emails, other endpoints and keyless
    deliveries are not held up; a final status (succeeded, failed, canceled) frees the next."""
    await only_ours(conn)
    now = await db_now(conn)
    ep, other_ep = await endpoint(conn), await endpoint(conn)
    batch = [
        repo.NewDelivery(
            delivery_id=new_id("whd"),
            endpoint_id=endpoint_id,
            tenant_id="ten_a",
            event_id=new_id("evt"),
            event_type=event_type,
            payload=b"{}",
            order_key=key,
            trace_context=None,
        )
        for endpoint_id, key, event_type in [
            (ep, "msg_a", "email.queued"),
            (ep, "msg_b", "email.queued"),
            (ep, "msg_a", "email.sent"),
            (other_ep, "msg_a", "email.sent"),
            (ep, "msg_a", "email.delivered"),
            (ep, None, "webhook.test"),
            (ep, None, "webhook.test"),
        ]
    ]
    assert len(await repo.insert_deliveries(conn, batch)) == 7
    a_queued, b_queued, a_sent, other_sent, a_delivered, test1, test2 = (d.delivery_id for d in batch)
    seqs = [(await row(conn, d.delivery_id))["seq"] for d in batch]
    assert seqs == sorted(seqs)  # recorded in the batch's order
    # The later ones of msg_a are due first: order wins over due time.
    await conn.execute(
        "UPDATE deliveries SET next_attempt_at = %s WHERE id = ANY(%s)",
        (now - timedelta(hours=1), [a_sent, a_delivered]),
    )

    assert sorted(await claim(conn)) == sorted([a_queued, b_queued, other_sent, test1, test2])
    assert await claim(conn) == []  # msg_a's sent waits for its queued (in flight)
    await repo.reschedule_delivery(
        conn, delivery_id=a_queued, attempt=1, delay_seconds=0, status_code=500, error="http_500", now=now
    )
    # Retrying: still open, so the later ones still wait; it is claimed again itself.
    assert await claim(conn) == [a_queued]
    assert await repo.finish_delivery(
        conn, delivery_id=a_queued, attempt=2, status="failed", status_code=500, error="http_500"
    )
    assert await claim(conn) == [a_sent]  # a final status (here failed) lets the next one go
    assert await claim(conn) == []
    assert await repo.finish_delivery(
        conn, delivery_id=a_sent, attempt=1, status="succeeded", status_code=200, error=None
    )
    assert await claim(conn) == [a_delivered]


async def test_a_saturated_endpoint_does_not_starve_the_others(conn: Conn) -> None:
    """Deliveries of an endpoint already at its in-flight bound are not even read, so a long
    backlog there (more than 4 times the batch) cannot hide another endpoint's due delivery."""
    await only_ours(conn)
    now = await db_now(conn)
    saturated, quiet = await endpoint(conn), await endpoint(conn)
    backlog = [await delivery(conn, saturated, due=now - timedelta(hours=1, seconds=-i)) for i in range(102)]
    waiting = await delivery(conn, quiet, due=now - timedelta(minutes=1))
    assert await claim(conn, limit=1, per_endpoint=1) == [backlog[0]]
    assert await claim(conn, limit=1, per_endpoint=1) == [waiting]


async def test_a_backlog_does_not_starve_another_endpoint_in_the_same_claim(conn: Conn) -> None:
    """An endpoint with free slots and a long backlog, older than everything else, gets its slots,
    and the same claim still takes another endpoint's one due delivery: the claim reads each
    endpoint's first due rows, not the oldest rows overall up to a window a backlog can fill."""
    await only_ours(conn)
    now = await db_now(conn)
    backed_up, quiet = await endpoint(conn), await endpoint(conn)
    backlog = [await delivery(conn, backed_up, due=now - timedelta(hours=1, seconds=-i)) for i in range(150)]
    waiting = await delivery(conn, quiet, due=now - timedelta(minutes=1))
    assert await claim(conn, limit=10, per_endpoint=2) == [backlog[0], backlog[1], waiting]


def deliveries_scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every scan of `deliveries` in an EXPLAIN (FORMAT JSON) plan tree."""
    here = [node] if node.get("Relation Name") == "deliveries" and "Scan" in node["Node Type"] else []
    return here + [scan for child in node.get("Plans", []) for scan in deliveries_scans(child)]


async def test_the_claim_reads_index_ranges_not_a_busy_endpoints_backlog(conn: Conn) -> None:
    """20,000 due deliveries of one endpoint (three events per email, so most wait for an earlier
    one), which holds its 4 live leases, and a few due at other endpoints: the claim's plan reads
    `deliveries` only through indexes, never a sequential scan, and (EXPLAIN ANALYZE, rolled back
    with the test) a few dozen of its rows, not the backlog (the statement before migration 0006
    read all 20,000 each claim)."""
    await only_ours(conn)
    now = await db_now(conn)
    busy = await endpoint(conn)
    others = [await endpoint(conn) for _ in range(3)]
    await conn.execute(
        "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload, next_attempt_at, "
        "order_key, status, attempts, lease_expires_at) "
        "SELECT 'whd_b' || g, %(busy)s, 'ten_a', 'evt_b' || g, 'email.sent', '\\x7b7d'::bytea, "
        "now() - interval '1 hour' + g * interval '1 ms', 'msg_' || (g / 3), "
        "CASE WHEN g <= 4 THEN 'in_flight' ELSE 'pending' END, CASE WHEN g <= 4 THEN 1 ELSE 0 END, "
        "CASE WHEN g <= 4 THEN now() + interval '1 hour' END FROM generate_series(1, 20000) g ORDER BY g",
        {"busy": busy},
    )
    waiting = [await delivery(conn, other, due=now - timedelta(minutes=1)) for other in others]
    await conn.execute("ANALYZE deliveries")

    cur = await conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + repo.CLAIM_DUE_SQL,
        repo.claim_params(now=None, limit=64, per_endpoint=4, lease_seconds=60),
    )
    found = await cur.fetchone()
    assert found is not None
    plan = next(iter(found.values()))[0]["Plan"]
    scans = deliveries_scans(plan)
    assert scans, plan
    assert [s["Node Type"] for s in scans if s["Node Type"] == "Seq Scan"] == []
    assert any(s.get("Index Name") == "deliveries_open_by_endpoint" for s in scans)
    read = sum(round((s["Actual Rows"] + s.get("Rows Removed by Filter", 0)) * s["Actual Loops"]) for s in scans)
    assert read < 200, read
    # The statement EXPLAINed is the claim itself: it claimed the three others' deliveries and none
    # of the busy endpoint's (at its bound: still its 4 leases).
    cur = await conn.execute(
        "SELECT endpoint_id, count(*) AS n FROM deliveries WHERE status = 'in_flight' GROUP BY endpoint_id"
    )
    assert {r["endpoint_id"]: r["n"] for r in await cur.fetchall()} == {busy: 4, **{other: 1 for other in others}}
    assert [(await row(conn, d))["status"] for d in waiting] == ["in_flight"] * len(waiting)


async def test_claims_are_serialised_across_replicas(webhooks_db: str, conn: Conn, other_conn: Conn) -> None:
    """The advisory lock keeps the per-endpoint bound global: a second claim waits for the first."""
    await claim(conn)
    await other_conn.execute("SET lock_timeout = '200ms'")
    with pytest.raises(psycopg.errors.LockNotAvailable):
        await claim(other_conn)


async def test_claim_skips_a_delivery_another_replica_holds(webhooks_db: str, conn: Conn, other_conn: Conn) -> None:
    """A dispatcher whose lease ran out is still settling its delivery (row locked) while another
    claims: the row is skipped, not waited for. Both sessions must see the rows, so they are committed
    by their own connection (unique ids) and deleted afterwards."""
    setup = await connect(webhooks_db, SCHEMA, autocommit=True)
    endpoint_id = await endpoint(setup)
    try:
        settling = await delivery(setup, endpoint_id, due=PAST)
        free = await delivery(setup, endpoint_id, due=PAST)
        await setup.execute(
            "UPDATE deliveries SET status = 'in_flight', attempts = 1, lease_expires_at = now() - interval '1 s' "
            "WHERE id = %s",
            (settling,),
        )

        assert await repo.finish_delivery(
            conn, delivery_id=settling, attempt=1, status="succeeded", status_code=200, error=None
        )  # row-locked until conn ends
        await other_conn.execute("SET statement_timeout = '2s'")  # a wait would fail, not hang
        claimed = await claim(other_conn, limit=1000, per_endpoint=1000)
        assert free in claimed
        assert settling not in claimed
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM deliveries WHERE endpoint_id = %s", (endpoint_id,))
        await setup.execute("DELETE FROM endpoints WHERE id = %s", (endpoint_id,))
        await setup.close()


async def test_finish_delivery_only_for_the_current_claim(conn: Conn) -> None:
    await only_ours(conn)
    endpoint_id = await endpoint(conn)
    delivery_id = await delivery(conn, endpoint_id, due=PAST)
    assert await claim(conn) == [delivery_id]
    # not the current attempt (our lease expired and someone else claimed it): refused
    assert not await repo.finish_delivery(
        conn, delivery_id=delivery_id, attempt=2, status="succeeded", status_code=200, error=None
    )
    assert (await row(conn, delivery_id))["status"] == "in_flight"

    assert await repo.finish_delivery(
        conn, delivery_id=delivery_id, attempt=1, status="failed", status_code=500, error="http_500"
    )
    stored = await row(conn, delivery_id)
    now = await db_now(conn)
    assert (stored["status"], stored["last_status_code"], stored["last_error"]) == ("failed", 500, "http_500")
    assert (stored["lease_expires_at"], stored["completed_at"]) == (None, now)
    # settled once
    assert not await repo.finish_delivery(
        conn, delivery_id=delivery_id, attempt=1, status="succeeded", status_code=200, error=None
    )
    assert await claim(conn) == []


async def test_reschedule_delivery_puts_it_back_for_later(conn: Conn) -> None:
    await only_ours(conn)
    endpoint_id = await endpoint(conn)
    delivery_id = await delivery(conn, endpoint_id, due=PAST)
    assert await claim(conn) == [delivery_id]
    now = await db_now(conn)

    assert (
        await repo.reschedule_delivery(
            conn, delivery_id=delivery_id, attempt=2, delay_seconds=5, status_code=503, error="http_503"
        )
        is None
    )
    due = await repo.reschedule_delivery(
        conn, delivery_id=delivery_id, attempt=1, delay_seconds=5.5, status_code=503, error="http_503"
    )
    assert due == now + timedelta(seconds=5.5)
    stored = await row(conn, delivery_id)
    assert (stored["status"], stored["attempts"], stored["lease_expires_at"], stored["last_error"]) == (
        "pending",
        1,
        None,
        "http_503",
    )
    assert stored["completed_at"] is None
    # not due yet; once due it is claimed as attempt 2
    assert await claim(conn) == []
    await conn.execute("UPDATE deliveries SET next_attempt_at = now() WHERE id = %s", (delivery_id,))
    claimed = await repo.claim_due_deliveries(conn, limit=10, per_endpoint=10, lease_seconds=30)
    assert [(c["id"], c["attempts"]) for c in claimed] == [(delivery_id, 2)]


async def test_attempts_are_recorded_once_each(conn: Conn) -> None:
    endpoint_id = await endpoint(conn)
    delivery_id = await delivery(conn, endpoint_id)
    retry_at = T0 + timedelta(seconds=30)
    await repo.insert_attempt(
        conn,
        delivery_id=delivery_id,
        endpoint_id=endpoint_id,
        attempt=1,
        started_at=T0,
        status_code=None,
        latency_ms=15000,
        error="timeout",
        next_retry_at=retry_at,
    )
    # the same attempt recorded again (a retried settle) is ignored
    await repo.insert_attempt(
        conn,
        delivery_id=delivery_id,
        endpoint_id=endpoint_id,
        attempt=1,
        started_at=T0,
        status_code=200,
        latency_ms=1,
        error=None,
        next_retry_at=None,
    )
    await repo.insert_attempt(
        conn,
        delivery_id=delivery_id,
        endpoint_id=endpoint_id,
        attempt=2,
        started_at=retry_at,
        status_code=200,
        latency_ms=42,
        error=None,
        next_retry_at=None,
    )
    cur = await conn.execute(
        "SELECT attempt, started_at, status_code, latency_ms, error, next_retry_at FROM delivery_attempts "
        "WHERE delivery_id = %s ORDER BY attempt",
        (delivery_id,),
    )
    assert await cur.fetchall() == [
        {
            "attempt": 1,
            "started_at": T0,
            "status_code": None,
            "latency_ms": 15000,
            "error": "timeout",
            "next_retry_at": retry_at,
        },
        {
            "attempt": 2,
            "started_at": retry_at,
            "status_code": 200,
            "latency_ms": 42,
            "error": None,
            "next_retry_at": None,
        },
    ]


async def test_cancel_pending_deliveries_spares_live_claims_and_settled_ones(conn: Conn) -> None:
    await only_ours(conn)
    endpoint_id, other = await endpoint(conn), await endpoint(conn)
    pending = await delivery(conn, endpoint_id, due=T0)
    live_claim = await delivery(conn, endpoint_id)
    expired_claim = await delivery(conn, endpoint_id)
    succeeded = await delivery(conn, endpoint_id)
    other_pending = await delivery(conn, other)
    await conn.execute(
        "UPDATE deliveries SET status = 'in_flight', lease_expires_at = now() + interval '1 minute' WHERE id = %s",
        (live_claim,),
    )
    await conn.execute(
        "UPDATE deliveries SET status = 'in_flight', lease_expires_at = now() WHERE id = %s", (expired_claim,)
    )
    await conn.execute("UPDATE deliveries SET status = 'succeeded' WHERE id = %s", (succeeded,))

    assert await repo.cancel_pending_deliveries(conn, endpoint_id, "endpoint_deleted") == 2
    statuses = {
        d: (await row(conn, d))["status"] for d in (pending, live_claim, expired_claim, succeeded, other_pending)
    }
    assert statuses == {
        pending: "canceled",
        live_claim: "in_flight",
        expired_claim: "canceled",
        succeeded: "succeeded",
        other_pending: "pending",
    }
    canceled = await row(conn, pending)
    assert (canceled["last_error"], canceled["completed_at"]) == ("endpoint_deleted", await db_now(conn))
    assert await repo.cancel_pending_deliveries(conn, endpoint_id, "again") == 0


# ----------------------------------------------------------------------------- retention


async def test_purge_deletes_old_finished_deliveries_with_their_attempts(conn: Conn) -> None:
    await only_ours(conn)
    now = await db_now(conn)
    ep = await endpoint(conn)
    ids = {status: await delivery(conn, ep) for status in ("succeeded", "failed", "canceled", "pending", "in_flight")}
    recent = await delivery(conn, ep)
    await conn.execute("UPDATE deliveries SET status = 'succeeded' WHERE id = %s", (recent,))
    for status, delivery_id in ids.items():
        await conn.execute(
            "UPDATE deliveries SET status = %s, created_at = %s WHERE id = %s",
            (status, now - timedelta(days=40), delivery_id),
        )
    for delivery_id in (*ids.values(), recent):
        for attempt in (1, 2):
            await repo.insert_attempt(
                conn,
                delivery_id=delivery_id,
                endpoint_id=ep,
                attempt=attempt,
                started_at=now,
                status_code=500,
                latency_ms=3,
                error="http_500",
                next_retry_at=None,
            )
    assert await repo.purge_finished_deliveries(conn, now - timedelta(days=30), 2) == 2  # a batch of 2
    assert await repo.purge_finished_deliveries(conn, now - timedelta(days=30), 100) == 1
    cur = await conn.execute("SELECT id FROM deliveries")
    assert {r["id"] for r in await cur.fetchall()} == {ids["pending"], ids["in_flight"], recent}
    cur = await conn.execute("SELECT DISTINCT delivery_id FROM delivery_attempts")
    assert {r["delivery_id"] for r in await cur.fetchall()} == {ids["pending"], ids["in_flight"], recent}


async def test_purge_deletes_old_email_summaries(conn: Conn) -> None:
    await conn.execute("DELETE FROM email_summaries")
    for email_id, age in (("msg_old", 31), ("msg_new", 1)):
        await conn.execute(
            "INSERT INTO email_summaries (email_id, tenant_id, mode, from_address, to_addresses, recipients, subject,"
            " created_at, recorded_at) VALUES (%s, 'ten_a', 'live', 'a@b.c', '[]', '[]', 's', now(),"
            " now() - make_interval(days => %s))",
            (email_id, age),
        )
    assert await repo.purge_email_summaries(conn, await db_now(conn) - timedelta(days=30), 100) == 1
    cur = await conn.execute("SELECT email_id FROM email_summaries")
    assert [r["email_id"] for r in await cur.fetchall()] == ["msg_new"]


async def test_delivery_backlog_counts_open_deliveries_by_state(conn: Conn) -> None:
    await conn.execute("DELETE FROM delivery_attempts")
    await conn.execute("DELETE FROM deliveries")
    assert await repo.delivery_backlog(conn, now=T0) == ({"due": 0, "waiting": 0, "in_flight": 0, "paused": 0}, 0.0)
    live, off = await endpoint(conn), await endpoint(conn)
    await delivery(conn, live, due=T0 - timedelta(seconds=90))  # due for 90 s
    await delivery(conn, live, due=T0 - timedelta(seconds=5))
    await delivery(conn, live, due=T0 + timedelta(hours=2))  # a retry later
    claimed = await delivery(conn, live, due=PAST)
    await conn.execute("UPDATE deliveries SET status = 'in_flight' WHERE id = %s", (claimed,))
    done = await delivery(conn, live, due=PAST)
    await conn.execute("UPDATE deliveries SET status = 'succeeded' WHERE id = %s", (done,))
    await delivery(conn, off, due=PAST)  # waits for its endpoint: neither due nor the oldest
    assert await repo.disable_endpoint(conn, off, "failing", now=T0)
    counts, oldest = await repo.delivery_backlog(conn, now=T0)
    assert counts == {"due": 2, "waiting": 1, "in_flight": 1, "paused": 1}
    assert oldest == pytest.approx(90)


async def test_successes_are_settled_in_one_statement_as_one_by_one(conn: Conn) -> None:
    """issue 15: `settle_succeeded` does what finish_delivery + insert_attempt + note_success do for
    each success: the delivery succeeds while our claim holds (a lease taken over is not ours: lost,
    its attempt logged all the same), and the endpoint's run of failures ends."""
    await only_ours(conn)
    failing, healthy, still_failing = await endpoint(conn), await endpoint(conn), await endpoint(conn)
    await conn.execute(
        "UPDATE endpoints SET failing_since = now() - interval '1 day' WHERE id = ANY(%s)", ([failing, still_failing],)
    )
    first, second = await delivery(conn, failing), await delivery(conn, healthy)
    taken = await delivery(conn, still_failing)
    assert sorted(await claim(conn)) == sorted([first, second, taken])
    # `taken`'s lease ran out and another worker claimed it again (attempt 2): our attempt 1 is stale.
    await conn.execute("UPDATE deliveries SET attempts = 2 WHERE id = %s", (taken,))
    done_at = await db_now(conn)

    def success(delivery_id: str, endpoint_id: str) -> repo.Succeeded:
        return repo.Succeeded(
            delivery_id=delivery_id,
            endpoint_id=endpoint_id,
            attempt=1,
            started_at=done_at - timedelta(seconds=1),
            status_code=204,
            latency_ms=12,
            response_body="ok",
            manual=False,
            completed_at=done_at,
        )

    kept = await repo.settle_succeeded(
        conn, [success(first, failing), success(second, healthy), success(taken, still_failing)]
    )
    assert kept == [True, True, False]
    for delivery_id in (first, second):
        stored = await row(conn, delivery_id)
        assert (stored["status"], stored["last_status_code"], stored["lease_expires_at"], stored["completed_at"]) == (
            "succeeded",
            204,
            None,
            done_at,
        )
    assert (await row(conn, taken))["status"] == "in_flight"
    cur = await conn.execute(
        "SELECT delivery_id, attempt, status_code, error, response_body FROM delivery_attempts ORDER BY id"
    )
    assert [tuple(r.values()) for r in await cur.fetchall()] == [
        (first, 1, 204, None, "ok"),
        (second, 1, 204, None, "ok"),
        (taken, 1, 204, None, "ok"),
    ]
    cur = await conn.execute("SELECT id, failing_since IS NULL AS recovered FROM endpoints")
    recovered = {r["id"]: r["recovered"] for r in await cur.fetchall()}
    assert recovered == {failing: True, healthy: True, still_failing: False}  # a lost claim changes nothing
