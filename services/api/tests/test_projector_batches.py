"""The email log projector's batch path (`apply_email_events`) against the real `api` schema: a
batch folds each email's events as applying them one after the other would, applies a duplicate
once, writes nothing for an email not in the log, runs a fixed number of statements whatever its
size, and two batches on one email (two replicas) serialise on the email's lock without one
overwriting what the other committed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from mailroom_api.emails import repository as emails_repo
from mailroom_api.emails.projector import apply_email_events
from mailroom_api.tenants import repository as tenants_repo
from mailroom_contracts import events
from mailroom_contracts.streams import API_EMAIL_LOG
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit.db import Conn, connect
from mailroom_kit.ids import new_id
from mailroom_kit.inbox import claim

T0 = datetime(2030, 1, 1, tzinfo=UTC)


async def tenant(conn: Conn) -> str:
    tenant_id = new_id("ten")
    await tenants_repo.insert_tenant(conn, tenant_id=tenant_id, name="Acme", monthly_quota=None, rate_limit=None)
    return tenant_id


async def email(conn: Conn, tenant_id: str, *, recipients: list[tuple[str, str]]) -> str:
    """A queued email with `recipients` ((address, type) in order), as the accept path writes it."""
    email_id = new_id("msg")
    row = emails_repo.EmailRow(
        id=email_id,
        tenant_id=tenant_id,
        api_key_id="key_x",
        mode="live",
        from_address="Acme <noreply@mail.acme.test>",
        from_domain="mail.acme.test",
        to_addresses=[a for a, kind in recipients if kind == "to"],
        cc_addresses=[a for a, kind in recipients if kind == "cc"],
        bcc_addresses=[],
        reply_to=[],
        subject="Receipt",
        html=None,
        text="hi",
        headers={},
        tags={},
        metadata=None,
        status="queued",
        created_at=T0,
        last_event_at=T0,
    )
    await emails_repo.insert_email(conn, row)
    await emails_repo.insert_recipients(conn, email_id, recipients, "queued")
    return email_id


@pytest.fixture
async def conn(api_database_url: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(api_database_url, "api"):
        yield c


def sent(email_id: str, tenant_id: str, at: int = 1) -> events.EmailSent:
    return events.EmailSent(
        event_id=new_id("evt"),
        occurred_at=T0 + timedelta(seconds=at),
        tenant_id=tenant_id,
        email_id=email_id,
        provider="ses",
        provider_message_id="pm",
    )


def delivered(email_id: str, tenant_id: str, recipients: list[str], at: int = 2) -> events.EmailDelivered:
    return events.EmailDelivered(
        event_id=new_id("evt"),
        occurred_at=T0 + timedelta(seconds=at),
        tenant_id=tenant_id,
        email_id=email_id,
        recipients=recipients,
    )


def bounced(email_id: str, tenant_id: str, recipients: list[str], at: int = 3) -> events.EmailBounced:
    return events.EmailBounced(
        event_id=new_id("evt"),
        occurred_at=T0 + timedelta(seconds=at),
        tenant_id=tenant_id,
        email_id=email_id,
        recipients=recipients,
        bounce_type="Permanent",
        bounce_subtype="General",
    )


async def state(conn: Conn, email_id: str) -> tuple[str, list[str], list[str]]:
    cur = await conn.execute("SELECT status FROM emails WHERE id = %s", (email_id,))
    row = await cur.fetchone()
    assert row is not None
    recipients = [r.status for r in await emails_repo.get_recipients(conn, email_id)]
    return row["status"], recipients, [e.type for e in await emails_repo.get_timeline(conn, email_id)]


class CountingCursor(psycopg.AsyncCursor[Any]):
    statements = 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        CountingCursor.statements += 1
        return await super().execute(*args, **kwargs)


async def test_a_batch_folds_each_emails_events_in_order_and_applies_a_duplicate_once(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    two = [("a@example.org", "to"), ("B@example.org", "cc")]
    first, second = await email(conn, tenant_id, recipients=two), await email(conn, tenant_id, recipients=two)
    applied_before = sent(second, tenant_id)
    assert await claim(conn, API_EMAIL_LOG.durable, applied_before.event_id)
    unknown = sent(new_id("msg"), tenant_id)
    first_sent = sent(first, tenant_id)
    batch: list[events.EmailEvent] = [
        first_sent,
        delivered(first, tenant_id, ["a@example.org"]),
        bounced(first, tenant_id, ["b@example.org"]),  # addresses match case-insensitively
        first_sent,  # the same event id again later in the batch
        unknown,
        applied_before,
        delivered(second, tenant_id, ["a@example.org", "b@example.org"]),
    ]
    results = await apply_email_events(conn, batch)
    assert results == ["applied", "applied", "applied", "duplicate", "not_yet_known", "duplicate", "applied"]
    assert await state(conn, first) == ("bounced", ["delivered", "bounced"], ["sent", "delivered", "bounced"])
    assert await state(conn, second) == ("delivered", ["delivered", "delivered"], ["delivered"])
    cur = await conn.execute("SELECT last_event_at FROM emails WHERE id = %s", (first,))
    assert await cur.fetchone() == {"last_event_at": T0 + timedelta(seconds=3)}
    cur = await conn.execute("SELECT count(*) AS n FROM inbox WHERE event_id = %s", (unknown.event_id,))
    assert await cur.fetchone() == {"n": 0}  # nothing claimed: it is retried, not lost
    # The whole batch again (a redelivery after a crash between commit and ack) changes nothing.
    assert set(await apply_email_events(conn, batch)) == {"duplicate", "not_yet_known"}
    assert await state(conn, first) == ("bounced", ["delivered", "bounced"], ["sent", "delivered", "bounced"])


async def test_a_batch_runs_the_same_few_statements_whatever_its_size(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    counts = []
    for size in (2, 40):
        ids = [await email(conn, tenant_id, recipients=[("a@example.org", "to")]) for _ in range(size // 2)]
        batch: list[events.EmailEvent] = []
        for email_id in ids:
            batch += [sent(email_id, tenant_id), delivered(email_id, tenant_id, ["a@example.org"])]
        conn.cursor_factory = CountingCursor
        CountingCursor.statements = 0
        try:
            assert set(await apply_email_events(conn, batch)) == {"applied"}
        finally:
            conn.cursor_factory = psycopg.AsyncCursor
        counts.append(CountingCursor.statements)
    # lock the emails, read their recipients, inbox claim, timeline, recipients, emails, and the
    # stats (issue 22): read the emails' facts, upsert the rollups
    assert counts[0] == counts[1] == 8, counts


async def test_two_batches_on_one_email_serialise_and_keep_the_other_ones_commit(api_database_url: str) -> None:
    """Replica A applies `bounced` and holds the email's lock; replica B's `sent` for the same
    email waits, then must read the recipients A committed: a late `sent` never moves a bounced
    recipient back."""
    setup = await connect(api_database_url, "api", autocommit=True)
    tenant_id = await tenant(setup)
    a = await connect(api_database_url, "api")
    b = await connect(api_database_url, "api")
    try:
        email_id = await email(setup, tenant_id, recipients=[("a@example.org", "to")])
        assert await apply_email_events(a, [bounced(email_id, tenant_id, ["a@example.org"])]) == ["applied"]
        waiting = asyncio.create_task(apply_email_events(b, [sent(email_id, tenant_id)]))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the email's row lock
        await a.commit()
        assert await asyncio.wait_for(waiting, 5) == ["applied"]
        await b.commit()
        assert await state(setup, email_id) == ("bounced", ["bounced"], ["sent", "bounced"])
    finally:
        await a.close()
        await b.close()
        await setup.execute("DELETE FROM emails WHERE tenant_id = %s", (tenant_id,))
        await setup.execute("DELETE FROM suppressions WHERE tenant_id = %s", (tenant_id,))  # the hard bounce's
        await setup.execute("DELETE FROM tenants WHERE id = %s", (tenant_id,))
        await setup.close()
