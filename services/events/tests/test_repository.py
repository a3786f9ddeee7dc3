"""The events repository's SQL (SNS de-duplication, audit annotations, confirmed subscriptions)
against the real `events` schema. Each test runs in one transaction that is rolled back at the end
(`rollback_connection`), so tests need no cleanup and counts are exact (ids are new per test)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_events import repository as repo
from mailroom_kit.db import Conn, connect

TOPIC = "arn:aws:sns:us-east-1:000000000000:mailroom-ses"


@pytest.fixture
async def conn(events_database: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(events_database, "events"):
        yield c


async def message(conn: Conn, message_id: str) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT * FROM sns_messages WHERE message_id = %s", (message_id,))
    return await cur.fetchone()


async def test_record_message_refuses_the_same_sns_message_id_twice(conn: Conn) -> None:
    message_id = str(uuid.uuid4())
    assert await repo.record_message(conn, message_id=message_id, topic_arn=TOPIC, type_="Notification")
    # SNS delivers at least once: the same MessageId again is a duplicate, whatever it claims
    assert not await repo.record_message(conn, message_id=message_id, topic_arn=f"{TOPIC}-2", type_="Other")
    assert await repo.record_message(conn, message_id=str(uuid.uuid4()), topic_arn=TOPIC, type_="Notification")

    row = await message(conn, message_id)
    assert row is not None
    assert (row["topic_arn"], row["type"], row["events_emitted"], row["ses_event_type"], row["email_id"]) == (
        TOPIC,
        "Notification",
        0,
        None,
        None,
    )
    cur = await conn.execute("SELECT count(*) AS n FROM sns_messages WHERE message_id = %s", (message_id,))
    assert await cur.fetchone() == {"n": 1}


async def test_record_message_stores_what_ses_reported_in_the_same_statement(conn: Conn) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert await repo.record_message(
        conn,
        message_id=first,
        topic_arn=TOPIC,
        type_="Notification",
        ses_event_type="Bounce",
        ses_message_id="0100-ses",
        email_id="msg_1",
        tenant_id="ten_1",
        events_emitted=2,
    )
    # a message that could not be attributed keeps NULLs
    assert await repo.record_message(conn, message_id=second, topic_arn=TOPIC, type_="Notification")
    row = await message(conn, first)
    assert row is not None
    assert (row["ses_event_type"], row["ses_message_id"], row["email_id"], row["tenant_id"], row["events_emitted"]) == (
        "Bounce",
        "0100-ses",
        "msg_1",
        "ten_1",
        2,
    )
    other = await message(conn, second)
    assert other is not None
    assert (other["ses_event_type"], other["email_id"], other["tenant_id"], other["events_emitted"]) == (
        None,
        None,
        None,
        0,
    )
    # a duplicate delivery changes nothing of the first one's row
    assert not await repo.record_message(
        conn, message_id=first, topic_arn=TOPIC, type_="Notification", ses_event_type="Delivery", events_emitted=9
    )
    again = await message(conn, first)
    assert again is not None and (again["ses_event_type"], again["events_emitted"]) == ("Bounce", 2)


async def test_record_subscription_upserts_the_confirmation_time(conn: Conn) -> None:
    topic = f"{TOPIC}-{uuid.uuid4().hex}"
    await repo.record_subscription(conn, topic)
    cur = await conn.execute(
        "SELECT topic_arn, confirmed_at, now() AS now FROM subscriptions WHERE topic_arn = %s", (topic,)
    )
    rows = await cur.fetchall()
    assert len(rows) == 1 and rows[0]["confirmed_at"] == rows[0]["now"]

    # confirming again (SNS re-sent the SubscriptionConfirmation) refreshes the time, one row
    old = datetime(2020, 1, 1, tzinfo=UTC)
    await conn.execute("UPDATE subscriptions SET confirmed_at = %s WHERE topic_arn = %s", (old, topic))
    await repo.record_subscription(conn, topic)
    cur = await conn.execute("SELECT confirmed_at, now() AS now FROM subscriptions WHERE topic_arn = %s", (topic,))
    rows = await cur.fetchall()
    assert len(rows) == 1 and rows[0]["confirmed_at"] == rows[0]["now"]


async def test_purge_deletes_only_records_older_than_the_cutoff(conn: Conn) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    for message_id in (old, recent):
        assert await repo.record_message(conn, message_id=message_id, topic_arn=TOPIC, type_="Notification")
    await conn.execute("UPDATE sns_messages SET received_at = now() - interval '31 days' WHERE message_id = %s", (old,))
    cutoff = datetime.now(UTC) - timedelta(days=30)
    assert await repo.purge_sns_messages(conn, cutoff, 100) == 1
    assert await message(conn, old) is None
    assert await message(conn, recent) is not None
    assert await repo.purge_sns_messages(conn, cutoff, 100) == 0


async def test_record_message_writes_the_events_and_wakes_the_relay_in_one_statement(events_database: str) -> None:
    channel = f"events_test_{uuid.uuid4().hex[:8]}"
    listener = await connect(events_database, "events", autocommit=True)
    writer = await connect(events_database, "events", autocommit=True)
    try:
        await listener.execute(f"LISTEN {channel}")
        message_id, event_ids = str(uuid.uuid4()), [f"evt_{uuid.uuid4().hex}" for _ in range(2)]
        rows = [(event_ids[0], "mailroom.email.bounced", b"one"), (event_ids[1], "mailroom.email.delivered", b"two")]
        kwargs: dict[str, Any] = {"topic_arn": TOPIC, "type_": "Notification", "notify_channel": channel}
        assert await repo.record_message(writer, message_id=message_id, outbox_rows=rows, **kwargs)
        woke = [n.channel async for n in listener.notifies(timeout=2, stop_after=1)]
        assert woke == [channel]
        cur = await writer.execute(
            "SELECT event_id, subject, payload FROM outbox WHERE event_id = ANY(%s) ORDER BY id", (event_ids,)
        )
        assert [(r["event_id"], r["subject"], bytes(r["payload"])) for r in await cur.fetchall()] == rows
        # the same SNS message again: nothing written, nobody woken
        again = [(f"evt_{uuid.uuid4().hex}", "mailroom.email.bounced", b"three")]
        assert not await repo.record_message(writer, message_id=message_id, outbox_rows=again, **kwargs)
        assert [n async for n in listener.notifies(timeout=0.5)] == []
        cur = await writer.execute("SELECT count(*) AS n FROM outbox WHERE event_id = %s", (again[0][0],))
        assert await cur.fetchone() == {"n": 0}
    finally:
        await writer.execute("DELETE FROM outbox WHERE subject LIKE 'mailroom.email.%%' AND payload IN ('one', 'two')")
        await listener.close()
        await writer.close()
