"""Automatic suppressions (issue 22) in the email log projector's batch path, against the real
`api` schema: permanent bounces (OnAccountSuppressionList included) and complaints put their
recipients on the list of the email's tenant and mode, once, in one statement per batch; transient
and undetermined bounces do not; duplicates and repeats keep the first entry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import psycopg
import pytest
from mailroom_api.emails.projector import apply_email_events
from mailroom_contracts import events
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id
from test_projector_batches import T0, CountingCursor, email, tenant


@pytest.fixture
async def conn(api_database_url: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(api_database_url, "api"):
        yield c


def bounce(
    email_id: str, tenant_id: str, recipients: list[str], kind: str, subtype: str = "General"
) -> events.EmailBounced:
    return events.EmailBounced(
        event_id=new_id("evt"),
        occurred_at=T0 + timedelta(seconds=3),
        tenant_id=tenant_id,
        email_id=email_id,
        recipients=recipients,
        bounce_type=kind,  # type: ignore[arg-type]
        bounce_subtype=subtype,
    )


def complaint(email_id: str, tenant_id: str, recipients: list[str], mode: str = "live") -> events.EmailComplained:
    return events.EmailComplained(
        event_id=new_id("evt"),
        occurred_at=T0 + timedelta(seconds=4),
        tenant_id=tenant_id,
        email_id=email_id,
        recipients=recipients,
        feedback_type="abuse",
        mode=mode,  # type: ignore[arg-type]
    )


async def entries(conn: Conn, tenant_id: str) -> list[tuple[str, str, str, str | None]]:
    cur = await conn.execute(
        "SELECT mode, email, reason, source_email_id FROM suppressions WHERE tenant_id = %s ORDER BY mode, email",
        (tenant_id,),
    )
    return [(r["mode"], r["email"], r["reason"], r["source_email_id"]) for r in await cur.fetchall()]


async def test_hard_bounces_and_complaints_suppress_soft_bounces_do_not(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    people = [
        ("Hard@Example.org", "to"),
        ("soft@example.org", "to"),
        ("list@example.org", "cc"),
        ("odd@example.org", "cc"),
    ]
    first = await email(conn, tenant_id, recipients=people)
    second = await email(conn, tenant_id, recipients=[("angry@example.org", "to"), ("hard@example.org", "to")])
    hard = bounce(first, tenant_id, ["Hard@Example.org"], "Permanent")
    batch: list[events.EmailEvent] = [
        hard,
        bounce(first, tenant_id, ["soft@example.org"], "Transient", "MailboxFull"),
        bounce(first, tenant_id, ["list@example.org"], "Permanent", "OnAccountSuppressionList"),
        bounce(first, tenant_id, ["odd@example.org"], "Undetermined"),
        complaint(second, tenant_id, ["angry@example.org"]),
        hard,  # the same notification again in the batch
        bounce(second, tenant_id, ["hard@example.org"], "Permanent"),  # already suppressed by the first
    ]
    await apply_email_events(conn, batch)
    expected = [
        ("live", "angry@example.org", "complaint", second),
        ("live", "hard@example.org", "bounce", first),
        ("live", "list@example.org", "bounce", first),
    ]
    assert await entries(conn, tenant_id) == expected
    # Redelivered later (the inbox has it) and a late complaint of a bounced address: nothing changes.
    assert await apply_email_events(conn, [hard, complaint(first, tenant_id, ["hard@example.org"])]) == [
        "duplicate",
        "applied",
    ]
    assert await entries(conn, tenant_id) == expected


async def test_the_test_mode_has_its_own_list(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    email_id = await email(conn, tenant_id, recipients=[("t@example.org", "to")])
    await apply_email_events(conn, [complaint(email_id, tenant_id, ["t@example.org"], mode="test")])
    assert await entries(conn, tenant_id) == [("test", "t@example.org", "complaint", email_id)]


async def test_one_statement_adds_a_batchs_suppressions(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    counts = []
    for size in (1, 20):
        ids = [await email(conn, tenant_id, recipients=[(f"x{i}@example.org", "to")]) for i in range(size)]
        batch: list[events.EmailEvent] = [
            bounce(email_id, tenant_id, [f"x{i}@example.org"], "Permanent") for i, email_id in enumerate(ids)
        ]
        conn.cursor_factory = CountingCursor
        CountingCursor.statements = 0
        try:
            assert set(await apply_email_events(conn, batch)) == {"applied"}
        finally:
            conn.cursor_factory = psycopg.AsyncCursor
        counts.append(CountingCursor.statements)
    # the projector's six statements, one suppression insert and the stats' two (read, upsert)
    assert counts[0] == counts[1] == 9, counts
    assert len(await entries(conn, tenant_id)) == 20


async def test_email_suppressed_is_one_timeline_entry_and_moves_no_status(conn: Conn) -> None:
    """The api's own EmailSuppressed (recipients dropped at accept) comes back through the email
    log: one `suppressed` timeline entry naming them, however often it is delivered, no status."""
    tenant_id = await tenant(conn)
    email_id = await email(conn, tenant_id, recipients=[("ok@example.org", "to"), ("gone@example.org", "to")])
    dropped = events.EmailSuppressed(
        event_id=new_id("evt"),
        occurred_at=T0,
        tenant_id=tenant_id,
        email_id=email_id,
        recipients=[events.SuppressedRecipient(email="gone@example.org", reason="bounce")],
    )
    assert await apply_email_events(conn, [dropped, dropped]) == ["applied", "duplicate"]
    assert await apply_email_events(conn, [dropped]) == ["duplicate"]
    cur = await conn.execute(
        "SELECT type, data FROM email_events WHERE email_id = %s AND id = %s", (email_id, dropped.event_id)
    )
    assert [(r["type"], r["data"]) for r in await cur.fetchall()] == [
        ("suppressed", {"recipients": [{"email": "gone@example.org", "reason": "bounce"}]})
    ]
    cur = await conn.execute("SELECT status FROM emails WHERE id = %s", (email_id,))
    row = await cur.fetchone()
    assert row is not None and row["status"] == "queued"
    assert await entries(conn, tenant_id) == []  # it adds no suppression: the entry exists already


async def soft_runs(conn: Conn, tenant_id: str) -> dict[str, int]:
    cur = await conn.execute("SELECT email, consecutive FROM soft_bounces WHERE tenant_id = %s", (tenant_id,))
    return {r["email"]: r["consecutive"] for r in await cur.fetchall()}


def delivery(email_id: str, tenant_id: str, recipients: list[str]) -> events.EmailDelivered:
    return events.EmailDelivered(
        event_id=new_id("evt"),
        occurred_at=T0 + timedelta(seconds=2),
        tenant_id=tenant_id,
        email_id=email_id,
        recipients=recipients,
    )


async def test_soft_bounces_in_a_row_suppress_and_a_delivery_resets_the_run(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    mails = [
        await email(conn, tenant_id, recipients=[("Full@Example.org", "to"), ("ok@example.org", "to")])
        for _ in range(4)
    ]

    def soft(i: int, who: str = "Full@Example.org") -> events.EmailBounced:
        return bounce(mails[i], tenant_id, [who], "Transient", "MailboxFull")

    # Off by default: nothing is counted.
    await apply_email_events(conn, [soft(0)])
    assert await soft_runs(conn, tenant_id) == {}
    # Threshold 3: two in a row, a delivery resets, then three in a row (one of them twice) suppress.
    first, second = soft(0), soft(1)
    assert await apply_email_events(conn, [first, second, first], soft_bounce_suppress_after=3) == [
        "applied",
        "applied",
        "duplicate",
    ]
    assert await soft_runs(conn, tenant_id) == {"full@example.org": 2}
    await apply_email_events(conn, [first, second], soft_bounce_suppress_after=3)  # redelivered: nothing more
    assert await soft_runs(conn, tenant_id) == {"full@example.org": 2}
    # A delivery then a soft bounce in one batch: the run starts again at one.
    await apply_email_events(
        conn, [delivery(mails[2], tenant_id, ["full@example.org"]), soft(2)], soft_bounce_suppress_after=3
    )
    assert await soft_runs(conn, tenant_id) == {"full@example.org": 1}
    await apply_email_events(conn, [delivery(mails[2], tenant_id, ["FULL@example.org"])], soft_bounce_suppress_after=3)
    assert await soft_runs(conn, tenant_id) == {}  # a delivery alone deletes the run
    assert await entries(conn, tenant_id) == []
    # Permanent/undetermined bounces and a delivery to another address do not touch the run.
    await apply_email_events(conn, [soft(0), soft(1)], soft_bounce_suppress_after=3)
    await apply_email_events(
        conn,
        [
            bounce(mails[3], tenant_id, ["Full@Example.org"], "Undetermined"),
            delivery(mails[3], tenant_id, ["ok@example.org"]),
        ],
        soft_bounce_suppress_after=3,
    )
    assert await soft_runs(conn, tenant_id) == {"full@example.org": 2}
    await apply_email_events(conn, [soft(3)], soft_bounce_suppress_after=3)
    assert await entries(conn, tenant_id) == [("live", "full@example.org", "bounce", mails[3])]
