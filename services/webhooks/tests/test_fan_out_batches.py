"""The fan-out of a batch of email events (`service.handle_email_events`, the `webhooks-email`
batch handler's transaction) against the real `webhooks` schema, rolled back after each test:
summaries recorded and used within the batch, tenants kept apart, a duplicate applied once, a
missing summary claiming nothing, a fixed number of statements whatever the batch's size, and the
whole batch redelivered (a crash between commit and ack) adding nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
import pytest
from mailroom_contracts import events as ev
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id
from mailroom_webhooks import repository as repo
from mailroom_webhooks import service
from mailroom_webhooks.app import SCHEMA
from mailroom_webhooks.payloads import EmailSummary

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CONSUMER = "webhooks-email"


@pytest.fixture
async def conn(webhooks_db: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(webhooks_db, SCHEMA):
        yield c


async def endpoint(conn: Conn, tenant_id: str, *, events: list[str] | None = None) -> str:
    endpoint_id = new_id("wh")
    await repo.insert_endpoint(
        conn,
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        url=f"https://hooks.example.org/{endpoint_id}",
        events=events or ["*"],
        description=None,
        secret_encrypted=f"enc-{endpoint_id}",
    )
    return endpoint_id


async def only_ours(conn: Conn) -> None:
    """Hide rows other tests committed, inside this rolled-back transaction."""
    await conn.execute("DELETE FROM delivery_attempts")
    await conn.execute("DELETE FROM deliveries")
    await conn.execute("DELETE FROM endpoints")


def queued(tenant_id: str, email_id: str | None = None) -> ev.EmailQueued:
    return ev.EmailQueued(
        event_id=new_id("evt"),
        occurred_at=T0,
        tenant_id=tenant_id,
        email_id=email_id or new_id("msg"),
        from_=ev.Address(email="no@acme.test", name="Acme"),
        to=[ev.Address(email="bob@example.org")],
        subject="Receipt",
        created_at=T0,
    )


def sent(tenant_id: str, email_id: str) -> ev.EmailSent:
    return ev.EmailSent(
        event_id=new_id("evt"),
        occurred_at=T0,
        tenant_id=tenant_id,
        email_id=email_id,
        provider="ses",
        provider_message_id="pm",
    )


def inputs(*events: ev.EmailEvent, wait: bool = True) -> list[service.EmailEventInput]:
    return [service.EmailEventInput(e, wait_for_summary=wait) for e in events]


async def deliveries(conn: Conn) -> list[tuple[str, str, str, dict[str, Any]]]:
    cur = await conn.execute("SELECT endpoint_id, event_id, event_type, payload FROM deliveries ORDER BY id")
    return [
        (r["endpoint_id"], r["event_id"], r["event_type"], msgspec.json.decode(bytes(r["payload"])))
        for r in await cur.fetchall()
    ]


class CountingCursor(psycopg.AsyncCursor[Any]):
    statements = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.statements += 1
        return await super().execute(*args, **kwargs)


async def test_summaries_of_a_batch_are_written_once_with_sql_null_metadata(conn: Conn) -> None:
    with_metadata = EmailSummary(
        email_id=new_id("msg"),
        tenant_id="ten_a",
        mode="live",
        from_address="Acme <no@acme.test>",
        to_addresses=["Bob <bob@example.org>"],
        recipients=["bob@example.org"],
        subject="Receipt",
        tags={"kind": "receipt"},
        metadata={"order": 7},
    )
    without = msgspec.structs.replace(with_metadata, email_id=new_id("msg"), metadata=None)
    await repo.insert_email_summaries(conn, [(with_metadata, T0), (without, T0)])
    # a redelivered EmailQueued does not overwrite it
    await repo.insert_email_summaries(conn, [(msgspec.structs.replace(with_metadata, subject="Changed"), T0)])
    got = {r["email_id"]: r for r in await repo.get_email_summaries(conn, [with_metadata.email_id, without.email_id])}
    assert msgspec.convert(got[with_metadata.email_id], EmailSummary) == with_metadata
    assert msgspec.convert(got[without.email_id], EmailSummary) == without
    cur = await conn.execute(
        "SELECT metadata IS NULL AS sql_null FROM email_summaries WHERE email_id = %s", (without.email_id,)
    )
    assert await cur.fetchone() == {"sql_null": True}  # SQL NULL, not a JSON null


async def test_a_batch_fans_out_once_per_event_and_endpoint_and_keeps_tenants_apart(conn: Conn) -> None:
    await only_ours(conn)
    a_all, a_sent = await endpoint(conn, "ten_a"), await endpoint(conn, "ten_a", events=["email.sent"])
    b_all = await endpoint(conn, "ten_b")
    first = queued("ten_a")
    first_sent = sent("ten_a", first.email_id)
    other_tenant = sent("ten_b", first.email_id)  # ten_a's email id under ten_b: not ten_a's summary
    batch = inputs(first, first_sent, first_sent, other_tenant)
    assert await service.handle_email_events(conn, batch, consumer=CONSUMER) == [1, 2, 0, None]
    rows = await deliveries(conn)
    expected = [
        (a_all, first.event_id, "email.queued"),
        (a_all, first_sent.event_id, "email.sent"),
        (a_sent, first_sent.event_id, "email.sent"),
    ]
    assert sorted((e, i, t) for e, i, t, _ in rows) == sorted(expected)
    sent_payload = next(p for _, i, _, p in rows if i == first_sent.event_id)
    assert sent_payload["data"]["subject"] == "Receipt"  # the summary recorded earlier in the batch
    assert b_all not in {e for e, _, _, _ in rows}
    # nothing was claimed for the event still waiting for its summary: it is retried, not lost
    cur = await conn.execute("SELECT count(*) AS n FROM inbox WHERE event_id = %s", (other_tenant.event_id,))
    assert await cur.fetchone() == {"n": 0}
    # The whole batch redelivered (a crash between commit and ack) adds nothing; once the wait
    # for a summary is over, the other tenant's event goes out without one, to its own endpoint.
    again = inputs(first, first_sent, other_tenant, wait=False)
    assert await service.handle_email_events(conn, again, consumer=CONSUMER) == [0, 0, 1]
    rows = await deliveries(conn)
    assert len(rows) == 4
    [(_, _, _, partial)] = [r for r in rows if r[0] == b_all]
    assert partial["data"]["subject"] is None and partial["data"]["to"] == []


async def test_a_batch_runs_the_same_few_statements_whatever_its_size(conn: Conn) -> None:
    await only_ours(conn)
    await endpoint(conn, "ten_a")
    counts = []
    for size in (1, 30):
        batch: list[ev.EmailEvent] = []
        for _ in range(size):
            q = queued("ten_a")
            batch += [q, sent("ten_a", q.email_id)]
        conn.cursor_factory = CountingCursor
        CountingCursor.statements = 0
        try:
            created = await service.handle_email_events(conn, inputs(*batch), consumer=CONSUMER)
        finally:
            conn.cursor_factory = psycopg.AsyncCursor
        assert created == [1] * len(batch)
        counts.append(CountingCursor.statements)
    # summaries, summaries read, inbox claim, endpoints, deliveries, NOTIFY
    assert counts == [6, 6], counts


async def test_scheduled_and_canceled_emails_go_out_with_the_summary_of_their_email_scheduled(conn: Conn) -> None:
    await only_ours(conn)
    everything = await endpoint(conn, "ten_a")
    only_canceled = await endpoint(conn, "ten_a", events=["email.canceled"])
    email_id = new_id("msg")
    at = datetime(2030, 1, 2, 9, 30, tzinfo=UTC)
    scheduled = ev.EmailScheduled(
        event_id=new_id("evt"),
        occurred_at=T0,
        tenant_id="ten_a",
        email_id=email_id,
        from_=ev.Address(email="no@acme.test", name="Acme"),
        to=[ev.Address(email="bob@example.org")],
        bcc=[ev.Address(email="audit@acme.test")],
        subject="Later",
        tags={"kind": "reminder"},
        created_at=T0,
        scheduled_at=at,
    )
    # The EmailScheduled records the summary (its EmailQueued comes only at its time, if ever);
    # the EmailCanceled of a later batch finds it.
    assert await service.handle_email_events(conn, inputs(scheduled), consumer=CONSUMER) == [1]
    canceled = ev.EmailCanceled(
        event_id=new_id("evt"), occurred_at=T0, tenant_id="ten_a", email_id=email_id, scheduled_at=at
    )
    assert await service.handle_email_events(conn, inputs(canceled), consumer=CONSUMER) == [2]
    rows = await deliveries(conn)
    assert sorted((e, t) for e, _, t, _ in rows) == sorted(
        [(everything, "email.scheduled"), (everything, "email.canceled"), (only_canceled, "email.canceled")]
    )
    for _, _, kind, payload in rows:
        data = payload["data"]
        assert payload["type"] == kind and data["email_id"] == email_id
        assert data["from"] == "Acme <no@acme.test>" and data["to"] == ["bob@example.org"]
        assert data["subject"] == "Later" and data["tags"] == {"kind": "reminder"}
        assert data["recipients"] == ["bob@example.org", "audit@acme.test"]
        assert data["scheduled_at"] == "2030-01-02T09:30:00.000Z"
