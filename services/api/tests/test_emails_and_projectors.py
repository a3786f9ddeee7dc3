"""Accepting emails (read-your-writes, outbox → JetStream), listing, and the email log and domain
projectors consuming real JetStream messages through the service's own workers."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from api_testkit import Tenant, add_domain, bearer, make_tenant, snapshot, unique_domain
from mailroom_api.emails import repository
from mailroom_contracts import decode_event, encode, subject_for
from mailroom_contracts.events import (
    DomainCreated,
    DomainStatusChanged,
    DomainVerified,
    EmailBounced,
    EmailClicked,
    EmailComplained,
    EmailDelivered,
    EmailDeliveryDelayed,
    EmailEvent,
    EmailFailed,
    EmailOpened,
    EmailQueued,
    EmailSent,
    EmailUnsubscribed,
    Event,
)
from mailroom_contracts.streams import API_DOMAINS, API_EMAIL_LOG, DOMAIN_STREAM, EMAIL_STREAM
from mailroom_devstack.pytest_plugin import consumer_settled
from mailroom_kit.runtime import Runtime

pytestmark = pytest.mark.usefixtures("workers")

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def evt() -> str:
    return f"evt_{secrets.token_hex(13)}"


async def publish(rt: Runtime, event: Event, msg_id: str | None = None) -> None:
    await rt.js.publish(subject_for(event), encode(event), headers={"Nats-Msg-Id": msg_id or event.event_id})


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def sender(runtime: Runtime) -> tuple[Tenant, str]:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    return tenant, domain


async def send(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> str:
    resp = await client.post("/v1/emails", json=body, headers=bearer(token))
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["status"] == "queued" and out["id"].startswith("msg_") and out["created_at"].endswith("Z")
    return str(out["id"])


async def test_send_is_readable_at_once_and_relayed(
    client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]
) -> None:
    tenant, domain = sender
    email_id = await send(
        client,
        tenant.live,
        {
            "from": f"Acme <noreply@{domain}>",
            "to": "Ann <ann@example.test>",
            "cc": ["cc@example.test"],
            "bcc": ["bcc@example.test"],
            "reply_to": "support@example.test",
            "subject": "Your receipt",
            "html": "<p>Thanks</p>",
            "text": "Thanks",
            "tags": {"kind": "receipt"},
            "metadata": {"order": 42},
            "headers": {"X-Entity-Ref-ID": "42"},
        },
    )
    resp = await client.get(f"/v1/emails/{email_id}", headers=bearer(tenant.live))
    assert resp.status_code == 200
    email = resp.json()
    assert email["status"] == "queued" and email["mode"] == "live"
    assert email["from"] == f"Acme <noreply@{domain}>" and email["to"] == ["Ann <ann@example.test>"]
    assert (email["cc"], email["bcc"], email["reply_to"]) == (
        ["cc@example.test"],
        ["bcc@example.test"],
        ["support@example.test"],
    )
    assert email["tags"] == {"kind": "receipt"} and email["metadata"] == {"order": 42}
    assert email["recipients"] == [
        {"email": "ann@example.test", "type": "to", "status": "queued"},
        {"email": "cc@example.test", "type": "cc", "status": "queued"},
        {"email": "bcc@example.test", "type": "bcc", "status": "queued"},
    ]
    assert [e["type"] for e in email["events"]] == ["queued"]
    assert "html" not in email and "text" not in email
    full = (await client.get(f"/v1/emails/{email_id}?include=content", headers=bearer(tenant.live))).json()
    assert (full["html"], full["text"], full["headers"]) == (
        "<p>Thanks</p>",
        "Thanks",
        {"X-Entity-Ref-ID": "42"},
    )

    # The outbox relay publishes EmailQueued with Nats-Msg-Id = event id.
    queued_event_id = email["events"][0]["id"]

    async def relayed() -> bool:
        try:
            msg = await runtime.js.get_last_msg(EMAIL_STREAM.name, "mailroom.email.queued")
        except Exception:
            return False
        return bool(msg.headers and msg.headers.get("Nats-Msg-Id") == queued_event_id)

    await eventually(relayed)
    msg = await runtime.js.get_last_msg(EMAIL_STREAM.name, "mailroom.email.queued")
    assert msg.data is not None
    event = decode_event(msg.data)
    assert isinstance(event, EmailQueued)
    assert event.email_id == email_id and event.tenant_id == tenant.id and event.mode == "live"
    assert event.from_.email == f"noreply@{domain}" and event.from_.name == "Acme"
    assert [a.email for a in event.to] == ["ann@example.test"] and event.to[0].name == "Ann"
    assert event.headers == {"X-Entity-Ref-ID": "42"} and event.tags == {"kind": "receipt"}

    async def outbox_row_gone() -> bool:  # the relay deletes the row once JetStream acked it (just after)
        async with runtime.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM outbox WHERE event_id = %s", (queued_event_id,))
            row = await cur.fetchone()
        return row is not None and row["n"] == 0

    await eventually(outbox_row_gone)


async def test_test_and_live_emails_are_separate(client: httpx.AsyncClient, sender: tuple[Tenant, str]) -> None:
    tenant, _ = sender
    test_id = await send(
        client,
        tenant.test,
        {"from": "me@not-verified.test", "to": "a@example.test", "subject": "t", "text": "t"},
    )
    assert (await client.get(f"/v1/emails/{test_id}", headers=bearer(tenant.test))).json()["mode"] == "test"
    resp = await client.get(f"/v1/emails/{test_id}", headers=bearer(tenant.live))
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")
    listed = (await client.get("/v1/emails?limit=100", headers=bearer(tenant.live))).json()["data"]
    assert test_id not in [e["id"] for e in listed]


async def email_state(client: httpx.AsyncClient, token: str, email_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/emails/{email_id}", headers=bearer(token))
    assert resp.status_code == 200
    out: dict[str, Any] = resp.json()
    return out


def base(tenant: Tenant, email_id: str, at: datetime) -> dict[str, Any]:
    return {"event_id": evt(), "occurred_at": at, "tenant_id": tenant.id, "email_id": email_id}


async def test_status_moves_only_forward(
    client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]
) -> None:
    tenant, domain = sender
    email_id = await send(
        client,
        tenant.live,
        {"from": f"n@{domain}", "to": ["a@example.test", "B@Example.test"], "subject": "s", "text": "t"},
    )

    async def status_is(expected: str, recipients: dict[str, str] | None = None) -> None:
        async def check() -> bool:
            state = await email_state(client, tenant.live, email_id)
            got = {r["email"]: r["status"] for r in state["recipients"]}
            return state["status"] == expected and (recipients is None or got == recipients)

        await eventually(check)

    await publish(runtime, EmailSent(**base(tenant, email_id, T0), provider="ses", provider_message_id="pm-1"))
    await status_is("sent", {"a@example.test": "sent", "B@example.test": "sent"})
    await publish(
        runtime,
        EmailDeliveryDelayed(
            **base(tenant, email_id, T0 + timedelta(seconds=5)),
            recipients=["b@example.test"],
            delay_type="MailboxFull",
        ),
    )
    await status_is("delivery_delayed", {"a@example.test": "sent", "B@example.test": "delivery_delayed"})
    await publish(
        runtime,
        EmailDelivered(**base(tenant, email_id, T0 + timedelta(seconds=10)), recipients=["a@example.test"]),
    )
    await status_is("delivered", {"a@example.test": "delivered", "B@example.test": "delivery_delayed"})
    bounce = EmailBounced(
        **base(tenant, email_id, T0 + timedelta(seconds=20)),
        recipients=["b@example.test"],
        bounce_type="Permanent",
        bounce_subtype="General",
        diagnostic_code="550 5.1.1",
    )
    await publish(runtime, bounce)
    await status_is("bounced", {"a@example.test": "delivered", "B@example.test": "bounced"})

    # Out of order: a late `delivered` for b (it happened earlier) and a late `sent` never move back.
    late_delivered = EmailDelivered(**base(tenant, email_id, T0 + timedelta(seconds=15)), recipients=["b@example.test"])
    await publish(runtime, late_delivered)
    await publish(
        runtime,
        EmailSent(**base(tenant, email_id, T0 + timedelta(seconds=1)), provider="ses", provider_message_id="pm-1"),
    )
    # A redelivered copy of the bounce (past JetStream's duplicate window: a different Nats-Msg-Id).
    await publish(runtime, bounce, msg_id=evt())

    async def all_applied() -> bool:
        state = await email_state(client, tenant.live, email_id)
        return late_delivered.event_id in [e["id"] for e in state["events"]] and len(state["events"]) == 7

    await eventually(all_applied)
    await asyncio.sleep(0.3)
    state = await email_state(client, tenant.live, email_id)
    assert state["status"] == "bounced"
    assert {r["email"]: r["status"] for r in state["recipients"]} == {
        "a@example.test": "delivered",
        "B@example.test": "bounced",
    }
    assert [e["type"] for e in state["events"]] == [
        "queued",
        "sent",
        "sent",
        "delivery_delayed",
        "delivered",
        "delivered",
        "bounced",
    ]
    times = [e["occurred_at"] for e in state["events"]]
    assert times[1:] == sorted(times[1:])
    bounced = next(e for e in state["events"] if e["type"] == "bounced")
    assert bounced["id"] == bounce.event_id
    assert bounced["data"]["bounce_type"] == "Permanent" and bounced["data"]["diagnostic_code"] == "550 5.1.1"
    assert state["last_event_at"] == "2030-01-01T00:00:20Z"

    # Complaint outranks bounce.
    await publish(
        runtime,
        EmailComplained(
            **base(tenant, email_id, T0 + timedelta(seconds=30)),
            recipients=["a@example.test"],
            feedback_type="abuse",
        ),
    )
    await status_is("complained", {"a@example.test": "complained", "B@example.test": "bounced"})


async def test_opens_and_clicks_are_timeline_entries_counted_once_and_not_statuses(
    client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]
) -> None:
    tenant, domain = sender
    to = f"reader-{secrets.token_hex(3)}@example.test"  # complaints elsewhere in this module suppress theirs
    email_id = await send(client, tenant.live, {"from": f"n@{domain}", "to": to, "subject": "s", "text": "t"})
    await publish(runtime, EmailDelivered(**base(tenant, email_id, T0 + timedelta(seconds=1)), recipients=[to]))
    opens = [
        EmailOpened(**base(tenant, email_id, T0 + timedelta(seconds=10 + i)), ip="192.0.2.1", user_agent="UA")
        for i in range(3)
    ]
    click = EmailClicked(
        **base(tenant, email_id, T0 + timedelta(seconds=20)), link="https://acme.test/x", ip="192.0.2.9"
    )
    for event in [*opens, click]:
        await publish(runtime, event)
    # Redeliveries past JetStream's duplicate window (new Nats-Msg-Id): the inbox drops them.
    await publish(runtime, opens[0], msg_id=evt())
    await publish(runtime, opens[0], msg_id=evt())
    await publish(runtime, click, msg_id=evt())
    # A late `sent` after the opens still cannot move the status back, and opens never moved it.
    await publish(runtime, EmailSent(**base(tenant, email_id, T0), provider="ses", provider_message_id="pm-1"))

    async def all_recorded() -> bool:
        return len((await email_state(client, tenant.live, email_id))["events"]) == 7

    await eventually(all_recorded)
    await eventually(lambda: consumer_settled(runtime.js, EMAIL_STREAM.name, API_EMAIL_LOG.durable))
    state = await email_state(client, tenant.live, email_id)
    assert (state["status"], state["opens"], state["clicks"]) == ("delivered", 3, 1)
    assert state["recipients"][0]["status"] == "delivered"
    assert sorted(e["type"] for e in state["events"]) == sorted(
        ["queued", "sent", "delivered", "opened", "opened", "opened", "clicked"]
    )
    clicked = next(e for e in state["events"] if e["type"] == "clicked")
    assert clicked["id"] == click.event_id
    assert clicked["data"]["link"] == "https://acme.test/x" and clicked["data"]["ip"] == "192.0.2.9"
    assert state["last_event_at"] == "2030-01-01T00:00:20Z"
    listed = (await client.get("/v1/emails?limit=50", headers=bearer(tenant.live))).json()["data"]
    mine = next(e for e in listed if e["id"] == email_id)
    assert (mine["opens"], mine["clicks"]) == (3, 1)


async def test_ses_unsubscribe_is_a_timeline_entry_and_one_suppression(
    client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]
) -> None:
    tenant, domain = sender
    address = f"leaver-{secrets.token_hex(3)}@example.test"
    email_id = await send(client, tenant.live, {"from": f"n@{domain}", "to": address, "subject": "s", "text": "t"})
    await publish(runtime, EmailDelivered(**base(tenant, email_id, T0), recipients=[address]))
    unsubscribed = EmailUnsubscribed(
        **base(tenant, email_id, T0 + timedelta(seconds=5)),
        recipients=[address.upper()],
        source="UnsubscribeHeader",
        unsubscribe_all=True,
    )
    for msg_id in (None, evt(), evt()):  # delivered three times
        await publish(runtime, unsubscribed, msg_id=msg_id)

    async def recorded() -> bool:
        return "unsubscribed" in [e["type"] for e in (await email_state(client, tenant.live, email_id))["events"]]

    await eventually(recorded)
    await eventually(lambda: consumer_settled(runtime.js, EMAIL_STREAM.name, API_EMAIL_LOG.durable))
    state = await email_state(client, tenant.live, email_id)
    assert state["status"] == "delivered"
    assert [e["type"] for e in state["events"]] == ["queued", "delivered", "unsubscribed"]
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT mode, reason, source_email_id FROM suppressions WHERE tenant_id = %s AND email = %s",
            (tenant.id, address),
        )
        rows = await cur.fetchall()
    assert [(r["mode"], r["reason"], r["source_email_id"]) for r in rows] == [("live", "unsubscribe", email_id)]


async def test_complaint_before_delivery_ends_complained(
    client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]
) -> None:
    tenant, domain = sender
    to = f"reader-{secrets.token_hex(3)}@example.test"  # complaints elsewhere in this module suppress theirs
    email_id = await send(client, tenant.live, {"from": f"n@{domain}", "to": to, "subject": "s", "text": "t"})
    complaint = EmailComplained(
        **base(tenant, email_id, T0 + timedelta(seconds=9)), recipients=[to], feedback_type="abuse"
    )
    delivered = EmailDelivered(**base(tenant, email_id, T0 + timedelta(seconds=2)), recipients=[to])
    for event, msg_id in ((complaint, None), (delivered, None), (complaint, evt()), (complaint, evt())):
        await publish(runtime, event, msg_id=msg_id)

    async def settled() -> bool:
        return len((await email_state(client, tenant.live, email_id))["events"]) == 3

    await eventually(settled)
    await eventually(lambda: consumer_settled(runtime.js, EMAIL_STREAM.name, API_EMAIL_LOG.durable))
    state = await email_state(client, tenant.live, email_id)
    assert state["status"] == "complained" and state["recipients"][0]["status"] == "complained"
    assert [e["type"] for e in state["events"]] == ["queued", "delivered", "complained"]


async def test_failed_is_terminal(client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]) -> None:
    tenant, domain = sender
    email_id = await send(
        # (not a@example.test: an earlier test's hard bounce put it on the suppression list)
        client,
        tenant.live,
        {"from": f"n@{domain}", "to": "f@example.test", "subject": "s", "text": "t"},
    )
    failed = EmailFailed(**base(tenant, email_id, T0), reason="provider_rejected", message="MessageRejected")
    await publish(runtime, failed)

    async def is_failed() -> bool:
        return (await email_state(client, tenant.live, email_id))["status"] == "failed"

    await eventually(is_failed)
    late = EmailDelivered(**base(tenant, email_id, T0 + timedelta(seconds=1)), recipients=["f@example.test"])
    await publish(runtime, late)

    async def both_recorded() -> bool:
        state = await email_state(client, tenant.live, email_id)
        return len(state["events"]) == 3

    await eventually(both_recorded)
    state = await email_state(client, tenant.live, email_id)
    assert state["status"] == "failed" and state["recipients"][0]["status"] == "failed"


async def test_event_before_its_email_is_retried_not_dropped(
    client: httpx.AsyncClient, runtime: Runtime, sender: tuple[Tenant, str]
) -> None:
    tenant, _ = sender
    email_id = f"msg_{secrets.token_hex(13)}"
    delivered = EmailDelivered(**base(tenant, email_id, T0), recipients=["late@example.test"])
    await publish(runtime, delivered)

    async def redelivery_pending() -> bool:
        info = await runtime.js.consumer_info(EMAIL_STREAM.name, API_EMAIL_LOG.durable)
        return info.num_ack_pending >= 1

    await eventually(redelivery_pending)
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM inbox WHERE event_id = %s", (delivered.event_id,))
        row = await cur.fetchone()
    assert row is not None and row["n"] == 0

    # The email shows up (as if its transaction had been slow); the retried event now applies.
    async with runtime.pool.connection() as conn, conn.transaction():
        await repository.insert_email(
            conn,
            repository.EmailRow(
                id=email_id,
                tenant_id=tenant.id,
                api_key_id="key_x",
                mode="live",
                from_address="a@b.test",
                from_domain="b.test",
                to_addresses=["late@example.test"],
                cc_addresses=[],
                bcc_addresses=[],
                reply_to=[],
                subject="s",
                html=None,
                text="t",
                headers={},
                tags={},
                metadata=None,
                status="queued",
                created_at=T0 - timedelta(seconds=1),
                last_event_at=T0 - timedelta(seconds=1),
            ),
        )
        await repository.insert_recipients(conn, email_id, [("late@example.test", "to")], "queued")

    async def applied() -> bool:
        return (await email_state(client, tenant.live, email_id))["status"] == "delivered"

    await eventually(applied, timeout=15)


async def test_domain_projector_keeps_the_newest_snapshot(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    name = unique_domain()
    pending = snapshot(tenant.id, name, status="pending")
    await publish(runtime, DomainCreated(event_id=evt(), occurred_at=T0, tenant_id=tenant.id, domain=pending))

    async def domain_status(expected: str) -> None:
        async def check() -> bool:
            resp = await client.get(f"/v1/domains/{pending.domain_id}", headers=bearer(tenant.live))
            return resp.status_code == 200 and resp.json()["status"] == expected

        await eventually(check)

    await domain_status("pending")
    verified = msgspec.structs.replace(pending, status="verified", last_checked_at=T0 + timedelta(minutes=10))
    await publish(
        runtime,
        DomainVerified(event_id=evt(), occurred_at=T0 + timedelta(minutes=10), tenant_id=tenant.id, domain=verified),
    )
    await domain_status("verified")
    older = msgspec.structs.replace(pending, status="partially_verified", last_checked_at=T0 + timedelta(minutes=5))
    stale = DomainStatusChanged(
        event_id=evt(),
        occurred_at=T0 + timedelta(minutes=5),
        tenant_id=tenant.id,
        domain=older,
        previous_status="pending",
    )
    await publish(runtime, stale)

    async def stale_seen() -> bool:
        async with runtime.pool.connection() as conn:
            cur = await conn.execute("SELECT 1 FROM inbox WHERE event_id = %s", (stale.event_id,))
            return await cur.fetchone() is not None

    await eventually(stale_seen)
    got = (await client.get(f"/v1/domains/{pending.domain_id}", headers=bearer(tenant.live))).json()
    assert got["status"] == "verified" and got["last_checked_at"] == "2030-01-01T00:10:00Z"
    listed = (await client.get("/v1/domains", headers=bearer(tenant.live))).json()["data"]
    assert [d["id"] for d in listed] == [pending.domain_id]
    # Verified through the projector: live sending from it is allowed.
    await send(client, tenant.live, {"from": f"hi@{name}", "to": "a@example.test", "subject": "s", "text": "t"})
    # Another tenant sees nothing.
    other = await make_tenant(runtime)
    resp = await client.get(f"/v1/domains/{pending.domain_id}", headers=bearer(other.live))
    assert resp.status_code == 404


async def test_a_burst_of_domain_events_keeps_the_newest_snapshot_and_applies_each_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Published back to back (so fetched together): the newest snapshot wins whatever the order,
    and an event republished under another message id is applied once."""
    tenant = await make_tenant(runtime)
    pending = snapshot(tenant.id, unique_domain(), status="pending")
    verified = msgspec.structs.replace(pending, status="verified", last_checked_at=T0 + timedelta(minutes=10))
    older = msgspec.structs.replace(pending, status="partially_verified", last_checked_at=T0 + timedelta(minutes=5))
    newest = DomainVerified(
        event_id=evt(), occurred_at=T0 + timedelta(minutes=10), tenant_id=tenant.id, domain=verified
    )
    burst: list[Event] = [
        DomainCreated(event_id=evt(), occurred_at=T0, tenant_id=tenant.id, domain=pending),
        newest,
        DomainStatusChanged(
            event_id=evt(),
            occurred_at=T0 + timedelta(minutes=5),
            tenant_id=tenant.id,
            domain=older,
            previous_status="pending",
        ),
    ]
    for event in burst:
        await publish(runtime, event)
    await publish(runtime, newest, msg_id=f"again-{newest.event_id}")

    async def all_seen() -> bool:
        async with runtime.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM inbox WHERE event_id = ANY(%s)", ([e.event_id for e in burst],)
            )
            row = await cur.fetchone()
            return row is not None and row["n"] == len(burst)

    await eventually(all_seen)
    await eventually(lambda: consumer_settled(runtime.js, DOMAIN_STREAM.name, API_DOMAINS.durable))
    got = (await client.get(f"/v1/domains/{pending.domain_id}", headers=bearer(tenant.live))).json()
    assert got["status"] == "verified" and got["last_checked_at"] == "2030-01-01T00:10:00Z"


async def test_list_emails_paginates_newest_first(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    ids = [
        await send(client, tenant.test, {"from": "a@x.test", "to": "b@example.test", "subject": f"n{i}", "text": "t"})
        for i in range(5)
    ]
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        url = "/v1/emails?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(url, headers=bearer(tenant.test))).json()
        assert len(page["data"]) <= 2
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    first = (await client.get("/v1/emails?limit=1", headers=bearer(tenant.test))).json()["data"][0]
    assert set(first) >= {"id", "from", "to", "subject", "status", "mode", "created_at", "last_event_at"}
    queued = (await client.get("/v1/emails?status=queued", headers=bearer(tenant.test))).json()["data"]
    assert len(queued) == 5
    none = (await client.get("/v1/emails?status=delivered", headers=bearer(tenant.test))).json()["data"]
    assert none == []
    future = (await client.get("/v1/emails?created_after=2100-01-01T00:00:00Z", headers=bearer(tenant.test))).json()[
        "data"
    ]
    assert future == []
    past = (await client.get("/v1/emails?created_before=2000-01-01T00:00:00Z", headers=bearer(tenant.test))).json()[
        "data"
    ]
    assert past == []
    tagged = await send(
        client,
        tenant.test,
        {
            "from": "a@other.test",
            "to": ["X <Filter@Example.test>"],
            "subject": "f",
            "text": "t",
            "tags": {"team": "billing"},
        },
    )
    for query in ("to=filter@example.test", "tag=team:billing", "domain=OTHER.test"):
        page = (await client.get(f"/v1/emails?{query}", headers=bearer(tenant.test))).json()["data"]
        assert [e["id"] for e in page] == [tagged], query
    assert (await client.get("/v1/emails?tag=team:sales", headers=bearer(tenant.test))).json()["data"] == []
    bad = await client.get("/v1/emails?tag=nocolon", headers=bearer(tenant.test))
    assert (bad.status_code, bad.json()["param"]) == (422, "tag")
    bad = await client.get("/v1/emails?cursor=nonsense", headers=bearer(tenant.test))
    assert (bad.status_code, bad.json()["param"]) == (422, "cursor")
    bad = await client.get("/v1/emails?status=lost", headers=bearer(tenant.test))
    assert (bad.status_code, bad.json()["param"]) == (422, "status")


def test_timeline_event_types_cover_every_lifecycle_event() -> None:
    from mailroom_api.emails.projector import ENGAGEMENT_TYPES
    from mailroom_api.emails.status import EVENT_STATUS
    from mailroom_contracts.events import EMAIL_EVENT_TYPES, EmailProviderAccepted

    lifecycle: set[type[EmailEvent]] = set(EMAIL_EVENT_TYPES) - {EmailQueued, EmailProviderAccepted}
    assert set(EVENT_STATUS) | set(ENGAGEMENT_TYPES) == lifecycle
    assert not set(EVENT_STATUS) & set(ENGAGEMENT_TYPES)  # opens and clicks are not statuses
