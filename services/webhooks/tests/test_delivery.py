"""Lifecycle events from JetStream → signed POSTs to a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from mailroom_contracts import decode_event, encode, subject_for, subjects
from mailroom_contracts.events import (
    Address,
    DomainFailed,
    DomainRecord,
    DomainSnapshot,
    DomainStatusChanged,
    DomainVerified,
    EmailBounced,
    EmailClicked,
    EmailComplained,
    EmailDelivered,
    EmailDeliveryDelayed,
    EmailFailed,
    EmailOpened,
    EmailQueued,
    EmailSent,
    Event,
    WebhookDisabled,
)
from mailroom_contracts.rpc import CreateWebhookReply, CreateWebhookRequest, GetWebhookRequest, WebhookReply
from mailroom_contracts.streams import CONSUMERS, STREAMS, WEBHOOK_STREAM
from mailroom_devstack.infra import NatsServer
from mailroom_kit import rpc
from mailroom_kit.ids import new_id
from mailroom_kit.jetstream import reconcile
from standardwebhooks.webhooks import Webhook


def now() -> datetime:
    return datetime.now(UTC)


def queued(tenant: str, email_id: str | None = None) -> EmailQueued:
    return EmailQueued(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        email_id=email_id or new_id("msg"),
        mode="test",
        from_=Address(email="noreply@mail.acme.com", name="Acme"),
        to=[Address(email="ada@example.com", name="Ada"), Address(email="bob@example.com")],
        cc=[Address(email="cc@example.com")],
        subject="Your receipt",
        html="<p>secret body</p>",
        tags={"campaign": "receipts"},
        metadata={"order": 42},
        created_at=now(),
    )


def sent(q: EmailQueued) -> EmailSent:
    return EmailSent(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=q.tenant_id,
        email_id=q.email_id,
        mode=q.mode,
        provider="simulator",
        provider_message_id="pm-" + secrets.token_hex(4),
    )


def delivered(q: EmailQueued, recipients: list[str] | None = None) -> EmailDelivered:
    return EmailDelivered(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=q.tenant_id,
        email_id=q.email_id,
        mode=q.mode,
        recipients=recipients or ["bob@example.com"],
        smtp_response="250 ok",
    )


async def create(nc: Any, tenant: str, url: str, events: list[str]) -> CreateWebhookReply:
    reply = await rpc.request(
        nc,
        subjects.RPC_WEBHOOKS_CREATE,
        CreateWebhookRequest(tenant_id=tenant, url=url, events=events),
        CreateWebhookReply,
    )
    assert reply.error is None, reply.error
    return reply


async def attempts_of(db: Any, endpoint_id: str) -> list[dict[str, Any]]:
    cur = await db.execute(
        "SELECT a.*, d.event_id FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id "
        "WHERE a.endpoint_id = %s ORDER BY a.id",
        (endpoint_id,),
    )
    return list(await cur.fetchall())


async def deliveries_of(db: Any, endpoint_id: str) -> list[dict[str, Any]]:
    cur = await db.execute("SELECT * FROM deliveries WHERE endpoint_id = %s ORDER BY created_at", (endpoint_id,))
    return list(await cur.fetchall())


async def test_lifecycle_events_are_signed_and_delivered_once_per_subscription(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    # `localhost` is resolved at delivery time and allowed only because 127.0.0.0/8 is allow-listed.
    a = await create(svc.nc, tenant, receiver.url("/a", host="localhost"), ["email.sent", "email.delivered"])
    b = await create(svc.nc, tenant, receiver.url("/b"), ["*"])
    c = await create(svc.nc, new_id("ten"), receiver.url("/c"), ["*"])  # another tenant
    q = queued(tenant)
    s, d = sent(q), delivered(q)
    for event in (q, s, d):
        await publisher.publish(event)

    posts_a = await receiver.wait_for("/a", 2)
    posts_b = await receiver.wait_for("/b", 3)
    await asyncio.sleep(0.5)  # nothing more arrives
    assert len(receiver.posts("/a")) == 2 and len(receiver.posts("/b")) == 3 and receiver.posts("/c") == []
    assert c.endpoint is not None

    for posts, reply in ((posts_a, a), (posts_b, b)):
        assert reply.secret is not None
        verifier = Webhook(reply.secret)
        for post in posts:
            assert post.headers["content-type"] == "application/json"
            verified = verifier.verify(post.body.decode(), post.headers)
            assert verified == json.loads(post.body)
            assert post.headers["webhook-id"] == verified["id"]
    by_type = {p.json()["type"]: p.json() for p in posts_b}
    assert set(by_type) == {"email.queued", "email.sent", "email.delivered"}
    assert {p.json()["type"] for p in posts_a} == {"email.sent", "email.delivered"}

    dlv = by_type["email.delivered"]
    assert dlv["id"] == d.event_id and dlv["created_at"].endswith("Z")
    data = dlv["data"]
    assert data["email_id"] == q.email_id and data["from"] == "Acme <noreply@mail.acme.com>"
    assert data["to"] == ["Ada <ada@example.com>", "bob@example.com"]
    assert data["subject"] == "Your receipt" and data["recipient"] == "bob@example.com"
    assert data["recipients"] == ["bob@example.com"]
    assert data["tags"] == {"campaign": "receipts"} and data["metadata"] == {"order": 42} and data["mode"] == "test"
    assert by_type["email.sent"]["data"]["provider_message_id"] == s.provider_message_id
    assert by_type["email.queued"]["data"]["recipients"] == [
        "ada@example.com",
        "bob@example.com",
        "cc@example.com",
    ]
    assert by_type["email.queued"]["data"]["recipient"] == "ada@example.com"
    assert all(b"secret body" not in p.body for p in posts_b)

    assert b.endpoint is not None
    rows = await deliveries_of(db, b.endpoint.webhook_id)
    assert {r["status"] for r in rows} == {"succeeded"} and len(rows) == 3
    attempts = await attempts_of(db, b.endpoint.webhook_id)
    assert [(x["status_code"], x["error"], x["attempt"]) for x in attempts] == [(200, None, 1)] * 3


async def test_same_event_published_twice_is_delivered_once(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/dup"), ["email.delivered"])
    q = queued(tenant)
    d = delivered(q)
    await publisher.publish(q)
    await publisher.publish(d)
    await publisher.publish(d, msg_id=new_id("evt"))  # JetStream stores it again; our inbox drops it
    await receiver.wait_for("/dup", 1)
    await asyncio.sleep(1.0)
    assert len(receiver.posts("/dup")) == 1


async def test_lifecycle_event_before_its_summary_waits_for_it(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/early"), ["email.bounced"])
    q = queued(tenant)
    bounce = EmailBounced(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        email_id=q.email_id,
        mode="test",
        recipients=["ada@example.com"],
        bounce_type="Permanent",
        bounce_subtype="General",
        diagnostic_code="smtp; 550 5.1.1 user unknown",
    )
    await publisher.publish(bounce)
    await asyncio.sleep(0.6)
    assert receiver.posts("/early") == []
    await publisher.publish(q)
    [post] = await receiver.wait_for("/early", 1)
    data = post.json()["data"]
    assert post.json()["type"] == "email.bounced"
    assert data["bounce"] == {
        "type": "Permanent",
        "subtype": "General",
        "diagnostic_code": "smtp; 550 5.1.1 user unknown",
    }
    assert data["recipient"] == "ada@example.com" and data["subject"] == "Your receipt"


async def test_opened_and_clicked_are_delivered_with_their_fields(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/engagement"), ["email.opened", "email.clicked"])
    q = queued(tenant)
    common: dict[str, Any] = {"tenant_id": tenant, "email_id": q.email_id, "mode": "test"}
    opened = EmailOpened(
        event_id=new_id("evt"), occurred_at=now(), ip="192.0.2.1", user_agent="Mozilla/5.0 (X11)", **common
    )
    clicked = EmailClicked(
        event_id=new_id("evt"),
        occurred_at=now(),
        link="https://acme.test/orders/42",
        ip="192.0.2.2",
        user_agent="curl/8",
        **common,
    )
    await publisher.publish(q)
    await publisher.publish(opened)
    await publisher.publish(clicked)
    posts = await receiver.wait_for("/engagement", 2)
    by_type = {p.json()["type"]: p.json() for p in posts}
    assert set(by_type) == {"email.opened", "email.clicked"}
    assert by_type["email.opened"]["id"] == opened.event_id
    assert by_type["email.opened"]["data"]["open"] == {"ip": "192.0.2.1", "user_agent": "Mozilla/5.0 (X11)"}
    click = by_type["email.clicked"]["data"]
    assert click["click"] == {"link": "https://acme.test/orders/42", "ip": "192.0.2.2", "user_agent": "curl/8"}
    assert click["email_id"] == q.email_id and click["subject"] == "Your receipt"


async def test_failure_then_success_is_retried_and_every_attempt_recorded(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service(retry_delays_seconds="0.2", max_attempts=4)
    tenant = new_id("ten")
    ep = await create(svc.nc, tenant, receiver.url("/flaky"), ["email.queued"])
    receiver.script("/flaky", h.Reply(500), h.Reply(503, headers={"Retry-After": "1"}), h.Reply(200))
    q = queued(tenant)
    await publisher.publish(q)
    posts = await receiver.wait_for("/flaky", 3)
    assert len({p.headers["webhook-id"] for p in posts}) == 1
    assert posts[2].at - posts[1].at >= 0.95  # Retry-After honoured over the 0.2 s schedule
    assert ep.endpoint is not None
    webhook_id = ep.endpoint.webhook_id  # a closure does not keep the narrowing

    async def settled() -> list[dict[str, Any]]:
        rows = await deliveries_of(db, webhook_id)
        return rows if rows and rows[0]["status"] == "succeeded" else []

    [row] = await h.eventually(settled)
    assert row["attempts"] == 3 and row["last_status_code"] == 200
    attempts = await attempts_of(db, ep.endpoint.webhook_id)
    assert [(x["attempt"], x["status_code"], x["error"]) for x in attempts] == [
        (1, 500, "http_500"),
        (2, 503, "http_503"),
        (3, 200, None),
    ]
    assert attempts[0]["next_retry_at"] is not None and attempts[2]["next_retry_at"] is None
    assert all(x["latency_ms"] >= 0 for x in attempts)


async def test_gives_up_after_max_attempts_and_times_out_slow_endpoints(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service(retry_delays_seconds="0.1", max_attempts=3, timeout_seconds=0.5)
    tenant = new_id("ten")
    ep = await create(svc.nc, tenant, receiver.url("/down"), ["email.queued"])
    receiver.script("/down", h.Reply(500), h.Reply(200, delay=1.5), h.Reply(502))
    await publisher.publish(queued(tenant))
    await receiver.wait_for("/down", 3)
    assert ep.endpoint is not None
    webhook_id = ep.endpoint.webhook_id  # a closure does not keep the narrowing

    async def failed() -> list[dict[str, Any]]:
        rows = await deliveries_of(db, webhook_id)
        return rows if rows and rows[0]["status"] == "failed" else []

    [row] = await h.eventually(failed)
    assert row["attempts"] == 3
    attempts = await attempts_of(db, ep.endpoint.webhook_id)
    assert [(x["status_code"], x["error"]) for x in attempts] == [
        (500, "http_500"),
        (None, "timeout"),
        (502, "http_502"),
    ]
    assert attempts[-1]["next_retry_at"] is None
    await asyncio.sleep(0.5)
    assert len(receiver.posts("/down")) == 3


async def test_410_gone_disables_the_endpoint(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    ep = await create(svc.nc, tenant, receiver.url("/gone"), ["*"])
    assert ep.endpoint is not None
    webhook_id = ep.endpoint.webhook_id  # a closure does not keep the narrowing
    receiver.script("/gone", h.Reply(410))
    q = queued(tenant)
    await publisher.publish(q)
    await receiver.wait_for("/gone", 1)

    async def disabled() -> bool:
        reply = await rpc.request(
            svc.nc,
            subjects.RPC_WEBHOOKS_GET,
            GetWebhookRequest(tenant_id=tenant, webhook_id=webhook_id),
            WebhookReply,
        )
        return reply.endpoint is not None and not reply.endpoint.enabled

    await h.eventually(disabled)
    await publisher.publish(sent(q))
    await publisher.publish(delivered(q))
    await asyncio.sleep(1.0)
    assert len(receiver.posts("/gone")) == 1
    rows = await deliveries_of(db, ep.endpoint.webhook_id)
    assert [(r["status"], r["last_status_code"]) for r in rows] == [("failed", 410)]

    # The event stream is told once, through the outbox relay: webhook.disabled on MAILROOM_WEBHOOK.
    async def announced() -> list[WebhookDisabled]:
        return [e for e in await stream_events(publisher.js, WEBHOOK_STREAM.name) if e.webhook_id == webhook_id]

    [event] = await h.eventually(announced)
    assert (event.tenant_id, event.reason, event.last_status_code, event.last_error) == (
        tenant,
        "gone",
        410,
        "http_410",
    )
    assert event.failing_since is None
    await asyncio.sleep(0.5)
    assert len(await announced()) == 1


async def stream_events(js: Any, stream: str) -> list[Any]:
    """Every event stored in `stream` (decoded by its type tag)."""
    info = await js.stream_info(stream)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await js.get_msg(stream, seq)
        found.append(decode_event(msg.data))
    return found


async def test_loopback_receiver_is_refused_unless_allow_listed(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service(allowed_cidrs="")
    tenant = new_id("ten")
    # A host name passes creation; its address is checked when delivering.
    ep = await create(svc.nc, tenant, receiver.url("/ssrf", host="localhost"), ["email.queued"])
    assert ep.endpoint is not None
    webhook_id = ep.endpoint.webhook_id  # a closure does not keep the narrowing
    await publisher.publish(queued(tenant))

    async def refused() -> list[dict[str, Any]]:
        rows = await deliveries_of(db, webhook_id)
        return rows if rows and rows[0]["status"] == "failed" else []

    [row] = await h.eventually(refused)
    assert row["attempts"] == 1 and row["last_error"] == "address_not_allowed"
    [attempt] = await attempts_of(db, ep.endpoint.webhook_id)
    assert attempt["status_code"] is None and attempt["error"] == "address_not_allowed"
    assert attempt["next_retry_at"] is None
    assert receiver.posts("/ssrf") == []


async def test_complained_delayed_failed_and_domain_failed_carry_their_fields(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    """The SPEC types not covered above, each with its type-specific fields: `complaint`, `delay`,
    `failed` (whose `recipients` are the email's: the event names none), and `domain.failed`'s `reason`."""
    svc = await start_service()
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/more"), ["*"])
    q = queued(tenant)
    delayed = EmailDeliveryDelayed(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        email_id=q.email_id,
        mode=q.mode,
        recipients=["ada@example.com"],
        delay_type="MailboxFull",
        provider_message_id="pm-delay",
    )
    complained = EmailComplained(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        email_id=q.email_id,
        mode=q.mode,
        recipients=["bob@example.com"],
        feedback_type="abuse",
        provider_message_id="pm-complaint",
    )
    other = queued(tenant)
    failed = EmailFailed(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        email_id=other.email_id,
        mode=other.mode,
        reason="provider_rejected",
        message="MessageRejected: Email address is not verified.",
    )
    snap = DomainSnapshot(
        domain_id=new_id("dom"),
        tenant_id=tenant,
        name="mail.fail.test",
        status="failed",
        region="us-east-1",
        mail_from_domain="bounce.mail.fail.test",
        created_at=now(),
        records=[],
    )
    domain_failed = DomainFailed(
        event_id=new_id("evt"), occurred_at=now(), tenant_id=tenant, domain=snap, reason="dkim_failed"
    )
    for event in (q, other, delayed, complained, failed, domain_failed):
        await publisher.publish(event)
    posts = await receiver.wait_for("/more", 6)
    await asyncio.sleep(0.3)
    assert len(receiver.posts("/more")) == 6
    by_type = {p.json()["type"]: p.json() for p in posts}
    assert set(by_type) >= {"email.delivery_delayed", "email.complained", "email.failed", "domain.failed"}

    dl = by_type["email.delivery_delayed"]
    assert dl["id"] == delayed.event_id and dl["data"]["delay"] == {"type": "MailboxFull"}
    assert (dl["data"]["recipients"], dl["data"]["recipient"]) == (["ada@example.com"], "ada@example.com")
    assert dl["data"]["provider_message_id"] == "pm-delay" and dl["data"]["subject"] == "Your receipt"

    cp = by_type["email.complained"]
    assert cp["data"]["complaint"] == {"feedback_type": "abuse"} and cp["data"]["recipients"] == ["bob@example.com"]
    assert cp["data"]["provider_message_id"] == "pm-complaint" and cp["data"]["tags"] == {"campaign": "receipts"}

    fl = by_type["email.failed"]
    assert fl["data"]["email_id"] == other.email_id
    assert fl["data"]["failed"] == {"reason": "provider_rejected", "message": failed.message}
    assert fl["data"]["recipient"] == "ada@example.com"
    assert fl["data"]["recipients"] == ["ada@example.com", "bob@example.com", "cc@example.com"]
    assert "provider_message_id" not in fl["data"]

    df = by_type["domain.failed"]
    assert df["id"] == domain_failed.event_id
    assert (df["data"]["domain_id"], df["data"]["name"], df["data"]["status"]) == (
        snap.domain_id,
        "mail.fail.test",
        "failed",
    )
    assert df["data"]["reason"] == "dkim_failed" and df["data"]["records"] == []
    assert "previous_status" not in df["data"]


async def test_domain_events(start_service: Any, publisher: Any, receiver: Any, h: Any) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/dom"), ["domain.verified", "domain.temporary_failure"])
    snap = DomainSnapshot(
        domain_id=new_id("dom"),
        tenant_id=tenant,
        name="mail.acme.com",
        status="verified",
        region="us-east-1",
        mail_from_domain="bounce.mail.acme.com",
        created_at=now(),
        records=[
            DomainRecord(
                purpose="dkim",
                type="CNAME",
                name="t._domainkey.mail.acme.com",
                value="t.dkim.amazonses.com",
                status="verified",
            )
        ],
    )
    verified = DomainVerified(event_id=new_id("evt"), occurred_at=now(), tenant_id=tenant, domain=snap)
    pending = DomainStatusChanged(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        domain=DomainSnapshot(**{**_fields(snap), "status": "pending"}),
        previous_status="verified",
    )
    temp = DomainStatusChanged(
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        domain=DomainSnapshot(**{**_fields(snap), "status": "temporary_failure"}),
        previous_status="verified",
    )
    records_only = DomainStatusChanged(  # a record changed; the status did not: nobody is told
        event_id=new_id("evt"),
        occurred_at=now(),
        tenant_id=tenant,
        domain=DomainSnapshot(**{**_fields(snap), "status": "temporary_failure"}),
        previous_status="temporary_failure",
    )
    for event in (verified, pending, temp, records_only):
        await publisher.publish(event)
    posts = await receiver.wait_for("/dom", 2)
    await asyncio.sleep(0.5)
    assert len(receiver.posts("/dom")) == 2
    by_type = {p.json()["type"]: p.json() for p in posts}
    assert set(by_type) == {"domain.verified", "domain.temporary_failure"}
    tf = by_type["domain.temporary_failure"]
    assert tf["id"] == temp.event_id and tf["data"]["name"] == "mail.acme.com"
    assert tf["data"]["status"] == "temporary_failure" and tf["data"]["previous_status"] == "verified"
    assert by_type["domain.verified"]["data"]["records"][0]["status"] == "verified"


def _fields(snap: DomainSnapshot) -> dict[str, Any]:
    return {f: getattr(snap, f) for f in snap.__struct_fields__}


async def test_slow_endpoint_never_delays_others_across_two_dispatchers(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    # Two service processes (two dispatchers claiming from the same table).
    # Each has only 2 slots: without the per-endpoint bound the slow endpoint could fill all 4.
    svc = await start_service(per_endpoint_concurrency=2, concurrency=2)
    await start_service(workers=("dispatcher",), per_endpoint_concurrency=2, concurrency=2)
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/slow"), ["email.queued"])
    await create(svc.nc, tenant, receiver.url("/fast"), ["email.queued"])
    receiver.script("/slow", *[h.Reply(200, delay=1.0) for _ in range(6)])
    events = [queued(tenant) for _ in range(6)]
    started = asyncio.get_running_loop().time()
    for event in events:
        await publisher.publish(event)
    fast = await receiver.wait_for("/fast", 6, timeout=5)
    fast_done = asyncio.get_running_loop().time() - started
    slow = await receiver.wait_for("/slow", 6, timeout=15)
    assert fast_done < 1.0, fast_done  # never waited for a slow 1 s answer
    assert receiver.max_active["/slow"] <= 2
    await asyncio.sleep(0.5)
    # Exactly once per endpoint and event, despite two claimers.
    for posts in (fast, slow, receiver.posts("/fast"), receiver.posts("/slow")):
        assert sorted(p.headers["webhook-id"] for p in posts) == sorted(e.event_id for e in events)


async def test_crashed_attempt_is_redelivered_after_its_lease(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    from mailroom_webhooks import service

    svc = await start_service(workers=("rpc_responders", "email_events"))
    tenant = new_id("ten")
    ep = await create(svc.nc, tenant, receiver.url("/lease"), ["email.queued"])
    assert ep.endpoint is not None
    webhook_id = ep.endpoint.webhook_id  # a closure does not keep the narrowing
    await publisher.publish(queued(tenant))
    await h.eventually(lambda: deliveries_of(db, webhook_id))
    # A worker claims it and dies before settling.
    async with db.transaction():
        [claim] = await service.claim_due(db, limit=10, per_endpoint=4, lease_seconds=0.5)
    assert claim.attempt == 1
    await start_service(workers=("dispatcher",))
    [post] = await receiver.wait_for("/lease", 1, timeout=5)
    assert ep.secret is not None
    assert Webhook(ep.secret).verify(post.body.decode(), post.headers)["id"] == claim.event_id

    async def done() -> list[dict[str, Any]]:
        rows = await deliveries_of(db, webhook_id)
        return rows if rows and rows[0]["status"] == "succeeded" else []

    [row] = await h.eventually(done)
    assert row["attempts"] == 2


async def test_successes_that_finish_together_share_a_settling_statement(
    start_service: Any, publisher: Any, receiver: Any, db: Any, h: Any
) -> None:
    """issue 15: the successful attempts that finish while earlier ones are being settled are settled
    by the next statement together (the kit's group commit), each delivery succeeded exactly once."""
    from mailroom_webhooks.dispatcher import Dispatcher
    from mailroom_webhooks.netpolicy import AddressPolicy
    from mailroom_webhooks.signing import SecretBox
    from mailroom_webhooks.transport import build_client

    emails = 12
    svc = await start_service(workers=("rpc_responders", "email_events"), per_endpoint_concurrency=emails)
    tenant = new_id("ten")
    ep = await create(svc.nc, tenant, receiver.url("/together"), ["email.queued"])
    assert ep.endpoint is not None
    webhook_id = ep.endpoint.webhook_id
    for _ in range(emails):
        await publisher.publish(queued(tenant))

    async def all_there() -> list[dict[str, Any]]:
        rows = await deliveries_of(db, webhook_id)
        return rows if len(rows) == emails else []

    await h.eventually(all_there)
    s = svc.settings
    rt = svc.runtime
    async with build_client(AddressPolicy(s.allowed_networks()), timeout=5.0) as client:
        dispatcher = Dispatcher(rt.pool, s, client, SecretBox(s.fernet_keys()))
        # The first settling statements wait behind a lock on the attempt log, so the successes
        # finishing meanwhile queue up for the next one, as they do when Postgres is busy.
        async with rt.pool.connection() as blocker:
            await blocker.execute("LOCK TABLE delivery_attempts IN EXCLUSIVE MODE")
            assert await dispatcher.dispatch_once(emails) == emails
            await receiver.wait_for("/together", emails)

            async def queued_up() -> bool:
                return dispatcher.successes.waiting >= emails - 2

            await h.eventually(queued_up)
            await blocker.rollback()
        await dispatcher.drain(grace=5.0)
    rows = await deliveries_of(db, webhook_id)
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 1)] * emails
    assert len(await attempts_of(db, webhook_id)) == emails
    assert dispatcher.successes.items == emails
    assert dispatcher.successes.statements <= 3  # two waited behind the lock, the rest went together


async def test_a_stream_of_fan_outs_is_claimed_in_shared_rounds_and_a_lone_one_at_once(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    """issue 15: each claim is a transaction whatever it takes; a wake-up inside a stream of fan-outs
    waits `linger_seconds` so that one claim takes several deliveries. A lone one is not delayed."""
    from mailroom_webhooks.dispatcher import Dispatcher
    from mailroom_webhooks.netpolicy import AddressPolicy
    from mailroom_webhooks.signing import SecretBox
    from mailroom_webhooks.transport import build_client

    claims: list[int] = []

    class Counting(Dispatcher):
        async def dispatch_once(self, limit: int) -> int:
            claimed = await super().dispatch_once(limit)
            if claimed:
                claims.append(claimed)
            return claimed

    svc = await start_service(workers=("rpc_responders", "email_events"))
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/stream"), ["email.queued"])
    s, rt = svc.settings, svc.runtime
    stop = asyncio.Event()
    async with build_client(AddressPolicy(s.allowed_networks()), timeout=5.0) as client:
        dispatcher = Counting(
            rt.pool, s, client, SecretBox(s.fernet_keys()), linger_seconds=0.3, stream_gap_seconds=0.4
        )
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            await asyncio.sleep(1.2)  # listening, and quiet for longer than the stream gap
            lone = queued(tenant)
            published = time.monotonic()
            await publisher.publish(lone)
            [first] = await receiver.wait_for("/stream", 1, timeout=5)
            assert time.monotonic() - published < 0.3  # no linger for it
            events = [queued(tenant) for _ in range(5)]
            for event in events:  # every 50 ms
                await publisher.publish(event)
                await asyncio.sleep(0.05)
            posts = await receiver.wait_for("/stream", 6, timeout=10)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
    assert sorted(p.headers["webhook-id"] for p in posts) == sorted(e.event_id for e in [lone, *events])
    assert first.headers["webhook-id"] == lone.event_id
    assert claims[0] == 1 and sum(claims) == 6
    assert len(claims) <= 3, claims  # the lone one, then the stream in one or two claims (not five)


async def test_event_whose_email_never_queued_is_delivered_partially_after_waiting(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    svc = await start_service(summary_retry_seconds=0.1, summary_wait_attempts=3)
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/orphan"), ["email.delivered"])
    orphan = queued(tenant)  # never published
    d = delivered(orphan, ["ada@example.com"])
    await publisher.publish(d)
    [post] = await receiver.wait_for("/orphan", 1)
    assert post.json()["id"] == d.event_id
    data = post.json()["data"]
    assert data["email_id"] == orphan.email_id and data["recipient"] == "ada@example.com"
    assert data["from"] is None and data["subject"] is None and data["to"] == [] and data["mode"] == "test"


def opened(q: EmailQueued) -> EmailOpened:
    return EmailOpened(
        event_id=new_id("evt"), occurred_at=now(), tenant_id=q.tenant_id, email_id=q.email_id, mode=q.mode
    )


async def test_one_endpoint_gets_each_emails_events_in_order_despite_concurrency_and_retries(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    """25 emails x 4 events to one endpoint, 8 attempts in flight there at once, answers taking
    0-300 ms and one in six failing first (retried 0.3 s later): at the receiver, every email's
    events still come in the order they happened (queued, sent, delivered, opened), a retried one
    before any later one of its email. The emails interleave freely (no global order)."""
    import random

    rng = random.Random(19)
    svc = await start_service(concurrency=32, per_endpoint_concurrency=8, retry_delays_seconds="0.3")
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/ordered"), ["*"])
    receiver.script(
        "/ordered",
        *[h.Reply(500 if rng.random() < 1 / 6 else 200, delay=rng.uniform(0, 0.3)) for _ in range(400)],
    )
    emails = [queued(tenant) for _ in range(25)]
    rounds: list[list[Any]] = [
        emails,
        [sent(q) for q in emails],
        [delivered(q) for q in emails],
        [opened(q) for q in emails],
    ]
    for events in rounds:
        for event in events:
            await publisher.publish(event)
        await asyncio.sleep(0.2)  # the next stage of every email comes while this one is in flight

    order = ["email.queued", "email.sent", "email.delivered", "email.opened"]

    async def all_delivered() -> bool:
        return {p.headers["webhook-id"] for p in receiver.posts("/ordered")} >= {
            e.event_id for events in rounds for e in events
        }

    await h.eventually(all_delivered, timeout=60)
    await asyncio.sleep(1.0)  # a retry of a delivery already answered would show up now
    per_email: dict[str, list[int]] = {}
    for post in sorted(receiver.posts("/ordered"), key=lambda p: p.at):
        body = post.json()
        per_email.setdefault(body["data"]["email_id"], []).append(order.index(body["type"]))
    assert set(per_email) == {q.email_id for q in emails}
    for email_id, seen in per_email.items():
        assert seen == sorted(seen), (email_id, [order[i] for i in seen])
        assert sorted(set(seen)) == [0, 1, 2, 3]
    assert sum(len(seen) for seen in per_email.values()) > 100  # some were retried (and still in order)
    assert receiver.max_active["/ordered"] > 1  # deliveries of different emails did overlap


async def test_a_pending_retry_survives_a_nats_restart_and_happens_exactly_once(
    start_service: Any, receiver: Any, db: Any, h: Any, tmp_path: Path
) -> None:
    """Issue 19: retries are durable across a restart of NATS. An attempt fails; while its retry
    waits (the injected clock holds it back), NATS is stopped and started again (same port, same
    store). The retry then happens once, both attempts are stored, and the consumers are back: an
    event published after the restart is delivered once too."""
    server = NatsServer(tmp_path / "nats").start()
    nc = None
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await reconcile(js, STREAMS, CONSUMERS)

        async def publish(*events: Event) -> None:
            for event in events:
                await js.publish(subject_for(event), encode(event), headers={"Nats-Msg-Id": event.event_id})

        clock = h.FakeClock()
        svc = await start_service(nats_url=server.url, clock=clock, retry_delays_seconds="60", max_attempts=4)
        tenant = new_id("ten")
        ep = await create(svc.nc, tenant, receiver.url("/nats"), ["email.delivered"])
        assert ep.endpoint is not None
        webhook_id = ep.endpoint.webhook_id  # a closure does not keep the narrowing
        receiver.script("/nats", h.Reply(500))
        q = queued(tenant)
        d = delivered(q)
        await publish(q, d)
        await h.eventually(lambda: deliveries_of(db, webhook_id))
        clock.advance(1)  # the fan-out stamps the database's now(); the dispatcher's clock stands still
        await receiver.wait_for("/nats", 1)

        async def waiting() -> dict[str, Any] | None:
            rows = await deliveries_of(db, webhook_id)
            return rows[0] if rows and rows[0]["status"] == "pending" and rows[0]["attempts"] == 1 else None

        row = await h.eventually(waiting)

        server.stop()
        await asyncio.sleep(0.5)
        server.start()

        async def reconnected() -> bool:
            return bool(svc.nc.is_connected and nc is not None and nc.is_connected)

        await h.eventually(reconnected, timeout=20)
        assert len(receiver.posts("/nats")) == 1  # the clock has not reached the retry yet
        clock.set(row["next_attempt_at"])
        await receiver.wait_for("/nats", 2, timeout=15)

        # The consumers came back too: an email after the restart is delivered (once).
        q2 = queued(tenant)
        d2 = delivered(q2)
        await publish(q2, d2)
        await receiver.wait_for("/nats", 3, timeout=20)

        async def both_succeeded() -> list[dict[str, Any]]:
            rows = await deliveries_of(db, webhook_id)
            return rows if len(rows) == 2 and all(r["status"] == "succeeded" for r in rows) else []

        await h.eventually(both_succeeded, timeout=15)
        clock.advance(7 * 86400)  # far past any schedule: nothing else is due
        await asyncio.sleep(1.0)
        ids = [p.headers["webhook-id"] for p in receiver.posts("/nats")]
        assert sorted(ids) == sorted([d.event_id, d.event_id, d2.event_id])
        attempts = await attempts_of(db, webhook_id)
        assert [(x["event_id"], x["attempt"], x["status_code"]) for x in attempts] == [
            (d.event_id, 1, 500),
            (d.event_id, 2, 200),
            (d2.event_id, 1, 200),
        ]
    finally:
        if nc is not None:
            await nc.close()
        server.stop()
