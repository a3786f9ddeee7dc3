"""Issue 19 through the real service (RPC responders + dispatcher, real Postgres, real NATS, a real
local HTTP receiver, an injectable clock): PATCH, rotate-secret with both signatures during the
overlap, webhook.test, the delivery log (attempts, response bodies, cursor, filters), manual retry
with the same webhook-id, the SPEC retry schedule, 410 and 5-day disabling with a notice, resuming
on re-enable, replicas and a restart that make every attempt exactly once, tenant isolation."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from mailroom_contracts import decode, subjects
from mailroom_contracts.events import WebhookDisabled
from mailroom_contracts.rpc import (
    CreateWebhookReply,
    CreateWebhookRequest,
    GetWebhookRequest,
    ListWebhookDeliveriesReply,
    ListWebhookDeliveriesRequest,
    RotateWebhookSecretReply,
    RotateWebhookSecretRequest,
    SendTestWebhookRequest,
    UpdateWebhookRequest,
    WebhookDeliveryReply,
    WebhookDeliveryRequest,
    WebhookReply,
)
from mailroom_kit import rpc
from mailroom_kit.ids import new_id
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SPEC_DELAYS = [5, 300, 1800, 7200, 18000, 36000, 36000]
SPEC = {"retry_delays_seconds": ",".join(map(str, SPEC_DELAYS)), "max_attempts": 8}


async def call(nc: Any, subject: str, request: msgspec.Struct, reply_type: type[Any]) -> Any:
    return await rpc.request(nc, subject, request, reply_type)


async def create(nc: Any, tenant: str, url: str, events: list[str] | None = None) -> CreateWebhookReply:
    reply: CreateWebhookReply = await call(
        nc,
        subjects.RPC_WEBHOOKS_CREATE,
        CreateWebhookRequest(tenant_id=tenant, url=url, events=events or ["email.delivered"]),
        CreateWebhookReply,
    )
    assert reply.error is None and reply.endpoint is not None, reply.error
    return reply


async def send_test(nc: Any, tenant: str, webhook_id: str) -> WebhookDeliveryReply:
    reply: WebhookDeliveryReply = await call(
        nc,
        subjects.RPC_WEBHOOKS_TEST,
        SendTestWebhookRequest(tenant_id=tenant, webhook_id=webhook_id),
        WebhookDeliveryReply,
    )
    return reply


async def get_delivery(nc: Any, tenant: str, webhook_id: str, delivery_id: str) -> WebhookDeliveryReply:
    reply: WebhookDeliveryReply = await call(
        nc,
        subjects.RPC_WEBHOOKS_DELIVERIES_GET,
        WebhookDeliveryRequest(tenant_id=tenant, webhook_id=webhook_id, delivery_id=delivery_id),
        WebhookDeliveryReply,
    )
    return reply


async def get_endpoint(nc: Any, tenant: str, webhook_id: str) -> WebhookReply:
    reply: WebhookReply = await call(
        nc, subjects.RPC_WEBHOOKS_GET, GetWebhookRequest(tenant_id=tenant, webhook_id=webhook_id), WebhookReply
    )
    return reply


async def patch(nc: Any, tenant: str, webhook_id: str, **fields: Any) -> WebhookReply:
    reply: WebhookReply = await call(
        nc,
        subjects.RPC_WEBHOOKS_UPDATE,
        UpdateWebhookRequest(tenant_id=tenant, webhook_id=webhook_id, **fields),
        WebhookReply,
    )
    return reply


async def delivery_row(db: Any, delivery_id: str) -> dict[str, Any]:
    cur = await db.execute("SELECT * FROM deliveries WHERE id = %s", (delivery_id,))
    row: dict[str, Any] = await cur.fetchone()
    return row


async def disabled_events(db: Any, webhook_id: str) -> list[WebhookDisabled]:
    """The `webhook.disabled` events of this endpoint in the service's outbox (relayed or not)."""
    cur = await db.execute("SELECT payload FROM outbox WHERE subject = %s ORDER BY id", (subjects.WEBHOOK_DISABLED,))
    found = [decode(bytes(r["payload"]), WebhookDisabled) for r in await cur.fetchall()]
    return [e for e in found if e.webhook_id == webhook_id]


async def wait_settled(db: Any, delivery_id: str, attempts: int, h: Any) -> dict[str, Any]:
    """The delivery's attempt number `attempts` is recorded (it is not in flight any more)."""

    async def settled() -> dict[str, Any] | None:
        row = await delivery_row(db, delivery_id)
        return row if row["attempts"] == attempts and row["status"] != "in_flight" else None

    result: dict[str, Any] = await h.eventually(settled, timeout=15)
    return result


# ----------------------------------------------------------------------------- PATCH


async def test_patch_changes_only_given_fields_revalidates_and_is_tenant_scoped(start_service: Any, h: Any) -> None:
    svc = await start_service(workers=("rpc_responders",))
    tenant, other = new_id("ten"), new_id("ten")
    wh = (await create(svc.nc, tenant, "https://hooks.example.com/a", ["email.sent"])).endpoint
    assert wh is not None
    changed = await patch(svc.nc, tenant, wh.webhook_id, events=["email.bounced", "email.bounced"], description="x")
    assert changed.endpoint is not None
    assert (changed.endpoint.url, changed.endpoint.events, changed.endpoint.description) == (
        "https://hooks.example.com/a",
        ["email.bounced"],
        "x",
    )
    moved = await patch(svc.nc, tenant, wh.webhook_id, url="https://hooks.example.com/b", clear_description=True)
    assert moved.endpoint is not None
    assert (moved.endpoint.url, moved.endpoint.events, moved.endpoint.description) == (
        "https://hooks.example.com/b",
        ["email.bounced"],
        None,
    )
    # The URL is validated as at create; nothing changes on a refusal.
    for bad, param in (
        ({"url": "https://169.254.169.254/latest"}, "url"),
        ({"url": "ftp://x.example.com"}, "url"),
        ({"events": ["email.nope"]}, "events[0]"),
        ({"events": []}, "events"),
        ({"events": ["*", "email.sent"]}, "events[0]"),
        ({"description": "a\x00b"}, "description"),
    ):
        reply = await patch(svc.nc, tenant, wh.webhook_id, **bad)
        assert reply.error is not None and (reply.error.code, reply.error.param) == ("validation_error", param), bad
    again = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert again.endpoint is not None and again.endpoint.url == "https://hooks.example.com/b"
    assert again.endpoint.events == ["email.bounced"]
    # Another tenant's id, a malformed id: not_found, and nothing changed.
    for who, webhook_id in ((other, wh.webhook_id), (tenant, "wh_nope"), (tenant, new_id("wh"))):
        reply = await patch(svc.nc, who, webhook_id, enabled=False)
        assert reply.error is not None and reply.error.code == "not_found"
    still = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert still.endpoint is not None and still.endpoint.enabled
    off = await patch(svc.nc, tenant, wh.webhook_id, enabled=False)
    assert off.endpoint is not None and not off.endpoint.enabled and off.endpoint.disabled_reason == "manual"
    assert off.endpoint.disabled_at is not None
    on = await patch(svc.nc, tenant, wh.webhook_id, enabled=True)
    assert on.endpoint is not None and on.endpoint.enabled and on.endpoint.disabled_reason is None


# ----------------------------------------------------------------------------- rotation


async def test_rotation_signs_with_both_secrets_during_the_overlap_then_only_the_new(
    start_service: Any, receiver: Any, h: Any
) -> None:
    clock = h.FakeClock()
    svc = await start_service(workers=("rpc_responders", "dispatcher"), clock=clock)
    tenant = new_id("ten")
    created = await create(svc.nc, tenant, receiver.url("/rot"))
    assert created.endpoint is not None and created.secret is not None
    webhook_id, old = created.endpoint.webhook_id, created.secret

    rotated: RotateWebhookSecretReply = await call(
        svc.nc,
        subjects.RPC_WEBHOOKS_ROTATE_SECRET,
        RotateWebhookSecretRequest(tenant_id=tenant, webhook_id=webhook_id),
        RotateWebhookSecretReply,
    )
    assert rotated.error is None and rotated.secret is not None and rotated.endpoint is not None
    new = rotated.secret
    assert new != old and new.startswith("whsec_")
    assert rotated.endpoint.previous_secret_expires_at == clock.now + timedelta(hours=24)
    # the secret is never shown again
    shown = await get_endpoint(svc.nc, tenant, webhook_id)
    assert shown.endpoint is not None and new not in msgspec.json.encode(shown).decode()

    assert (await send_test(svc.nc, tenant, webhook_id)).error is None
    [during] = await receiver.wait_for("/rot", 1)
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):  # a receiver that knows only one of them accepts it
        assert Webhook(secret).verify(during.body, during.headers)["type"] == "webhook.test"

    clock.advance(24 * 3600 + 1)  # the overlap is over
    assert (await send_test(svc.nc, tenant, webhook_id)).error is None
    after = (await receiver.wait_for("/rot", 2))[1]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert Webhook(new).verify(after.body, after.headers)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)

    for who, wid in ((new_id("ten"), webhook_id), (tenant, "wh_x")):
        bad: RotateWebhookSecretReply = await call(
            svc.nc,
            subjects.RPC_WEBHOOKS_ROTATE_SECRET,
            RotateWebhookSecretRequest(tenant_id=who, webhook_id=wid),
            RotateWebhookSecretReply,
        )
        assert bad.error is not None and bad.error.code == "not_found" and bad.secret is None


# ----------------------------------------------------------------------------- test event, log, retry


async def test_test_event_delivery_log_and_manual_retry_keep_the_webhook_id(
    start_service: Any, receiver: Any, db: Any, h: Any
) -> None:
    svc = await start_service(workers=("rpc_responders", "dispatcher"), retry_delays_seconds="3600")
    tenant = new_id("ten")
    created = await create(svc.nc, tenant, receiver.url("/log"), ["email.sent"])  # not subscribed to webhook.test
    assert created.endpoint is not None and created.secret is not None
    webhook_id = created.endpoint.webhook_id
    big = b"E" * 5000 + b"\x00tail"
    receiver.script("/log", h.Reply(500, body=big), h.Reply(200, body=b"thanks"))

    test = await send_test(svc.nc, tenant, webhook_id)
    assert test.error is None and test.delivery is not None
    delivery_id = test.delivery.delivery_id
    assert test.delivery.event_type == "webhook.test" and test.delivery.status == "pending"
    [first] = await receiver.wait_for("/log", 1)
    payload = Webhook(created.secret).verify(first.body, first.headers)
    assert payload["type"] == "webhook.test" and payload["data"]["webhook_id"] == webhook_id
    assert payload["id"] == test.delivery.event_id == first.headers["webhook-id"]
    await wait_settled(db, delivery_id, 1, h)

    got = await get_delivery(svc.nc, tenant, webhook_id, delivery_id)
    assert got.delivery is not None
    d = got.delivery
    assert (d.status, d.attempts_count, d.last_status_code, d.last_error) == ("pending", 1, 500, "http_500")
    [a1] = d.attempts
    assert (a1.attempt, a1.status_code, a1.error, a1.manual) == (1, 500, "http_500", False)
    assert a1.response_body == "E" * 4096  # truncated to 4 KiB
    assert a1.latency_ms >= 0 and a1.next_retry_at is not None and d.next_attempt_at == a1.next_retry_at
    assert 3240 <= (a1.next_retry_at - a1.started_at).total_seconds() <= 3960 + 5  # 1 h ± 10 %

    # Retry now: a new attempt, the same webhook-id, long before the schedule's time.
    retried: WebhookDeliveryReply = await call(
        svc.nc,
        subjects.RPC_WEBHOOKS_DELIVERIES_RETRY,
        WebhookDeliveryRequest(tenant_id=tenant, webhook_id=webhook_id, delivery_id=delivery_id),
        WebhookDeliveryReply,
    )
    assert retried.error is None
    second = (await receiver.wait_for("/log", 2))[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"] and second.body == first.body
    await wait_settled(db, delivery_id, 2, h)
    done = await get_delivery(svc.nc, tenant, webhook_id, delivery_id)
    assert done.delivery is not None and done.delivery.status == "succeeded" and done.delivery.next_attempt_at is None
    assert [(a.attempt, a.status_code, a.manual, a.response_body) for a in done.delivery.attempts] == [
        (1, 500, False, "E" * 4096),
        (2, 200, True, "thanks"),
    ]

    # The list: newest first, cursor pagination, filters.
    for _ in range(2):
        assert (await send_test(svc.nc, tenant, webhook_id)).error is None
    await receiver.wait_for("/log", 4)

    async def page(**kw: Any) -> ListWebhookDeliveriesReply:
        reply: ListWebhookDeliveriesReply = await call(
            svc.nc,
            subjects.RPC_WEBHOOKS_DELIVERIES_LIST,
            ListWebhookDeliveriesRequest(tenant_id=tenant, webhook_id=webhook_id, **kw),
            ListWebhookDeliveriesReply,
        )
        return reply

    p1 = await page(limit=2)
    assert p1.error is None and len(p1.data) == 2 and p1.next_cursor == p1.data[-1].delivery_id
    p2 = await page(limit=2, cursor=p1.next_cursor)
    assert [x.delivery_id for x in p2.data] == [delivery_id] and p2.next_cursor is None
    ids = [x.delivery_id for x in p1.data + p2.data]
    assert ids == sorted(ids, reverse=True) and all(x.attempts == [] for x in p1.data)
    assert [x.delivery_id for x in (await page(event_type="email.sent")).data] == []
    assert len((await page(event_type="webhook.test")).data) == 3
    for bad, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"cursor": "nope"}, "cursor"),
        ({"status": "lost"}, "status"),
        ({"event_type": "email.nope"}, "event_type"),
    ):
        reply = await page(**bad)
        assert reply.error is not None and (reply.error.code, reply.error.param) == ("validation_error", param)

    # Isolation: another tenant (or another endpoint of ours) names nothing.
    other = new_id("ten")
    mine2 = await create(svc.nc, tenant, receiver.url("/log2"))
    assert mine2.endpoint is not None
    for who, wid, did in (
        (other, webhook_id, delivery_id),
        (tenant, mine2.endpoint.webhook_id, delivery_id),
        (tenant, webhook_id, new_id("whd")),
        (tenant, webhook_id, "whd_bad"),
    ):
        for subject in (subjects.RPC_WEBHOOKS_DELIVERIES_GET, subjects.RPC_WEBHOOKS_DELIVERIES_RETRY):
            reply = await call(
                svc.nc,
                subject,
                WebhookDeliveryRequest(tenant_id=who, webhook_id=wid, delivery_id=did),
                WebhookDeliveryReply,
            )
            assert reply.error is not None and reply.error.code == "not_found" and reply.delivery is None
    foreign = await call(
        svc.nc,
        subjects.RPC_WEBHOOKS_DELIVERIES_LIST,
        ListWebhookDeliveriesRequest(tenant_id=other, webhook_id=webhook_id),
        ListWebhookDeliveriesReply,
    )
    assert foreign.error is not None and foreign.error.code == "not_found" and foreign.data == []
    assert (await send_test(svc.nc, other, webhook_id)).error.code == "not_found"  # type: ignore[union-attr]
    await asyncio.sleep(0.3)
    assert len(receiver.posts("/log")) == 4  # nothing more was sent


async def test_redirects_are_not_followed_and_retry_after_is_honoured_within_bounds(
    start_service: Any, receiver: Any, db: Any, h: Any
) -> None:
    clock = h.FakeClock()
    svc = await start_service(
        workers=("rpc_responders", "dispatcher"), clock=clock, max_retry_after_seconds=7200, **SPEC
    )
    tenant = new_id("ten")
    wh = (await create(svc.nc, tenant, receiver.url("/ra"))).endpoint
    assert wh is not None
    receiver.script(
        "/ra",
        h.Reply(302, headers={"location": "http://169.254.169.254/latest/meta-data/"}),
        h.Reply(503, headers={"retry-after": "900"}),  # longer than the schedule's 5 min: wins
        h.Reply(429, headers={"retry-after": "999999"}),  # capped at 2 h
        h.Reply(200),
    )
    test = await send_test(svc.nc, tenant, wh.webhook_id)
    assert test.delivery is not None
    did = test.delivery.delivery_id
    expected = [(5, 5), (900, 900), (7200, 7200)]  # (min, max) of the delay after attempts 1..3
    for i, (low, high) in enumerate(expected, start=1):
        row = await wait_settled(db, did, i, h)
        started = clock.now
        delay = (row["next_attempt_at"] - started).total_seconds()
        assert low * 0.9 <= delay <= high * 1.1, (i, delay)
        clock.set(row["next_attempt_at"])
    row = await wait_settled(db, did, 4, h)
    assert row["status"] == "succeeded"
    posts = receiver.posts("/ra")
    assert len(posts) == 4 and all(p.path == "/ra" for p in posts)  # never followed to the metadata address
    got = await get_delivery(svc.nc, tenant, wh.webhook_id, did)
    assert got.delivery is not None
    assert [(a.status_code, a.error) for a in got.delivery.attempts] == [
        (302, "http_302"),
        (503, "http_503"),
        (429, "http_429"),
        (200, None),
    ]


# ----------------------------------------------------------------------------- schedule, disabling


async def test_the_spec_schedule_makes_eight_attempts_over_about_28_hours(
    start_service: Any, receiver: Any, db: Any, h: Any
) -> None:
    clock = h.FakeClock()
    svc = await start_service(workers=("rpc_responders", "dispatcher"), clock=clock, **SPEC)
    tenant = new_id("ten")
    wh = (await create(svc.nc, tenant, receiver.url("/sched"))).endpoint
    assert wh is not None
    receiver.script("/sched", *[h.Reply(500)] * 8)
    start = clock.now
    test = await send_test(svc.nc, tenant, wh.webhook_id)
    assert test.delivery is not None
    did = test.delivery.delivery_id
    for attempt, base in enumerate(SPEC_DELAYS, start=1):
        row = await wait_settled(db, did, attempt, h)
        assert row["status"] == "pending"
        delay = (row["next_attempt_at"] - clock.now).total_seconds()
        assert base * 0.9 <= delay <= base * 1.1, (attempt, delay)
        # one second early: not due yet, nothing is sent
        clock.set(row["next_attempt_at"] - timedelta(seconds=1))
        await asyncio.sleep(0.3)
        assert len(receiver.posts("/sched")) == attempt
        clock.set(row["next_attempt_at"])
    row = await wait_settled(db, did, 8, h)
    assert row["status"] == "failed" and row["last_error"] == "http_500"
    # 5 s + 5 min + 30 min + 2 h + 5 h + 10 h + 10 h = 99,305 s ≈ 27.6 h (± jitter)
    elapsed = (clock.now - start).total_seconds()
    assert 0.9 * sum(SPEC_DELAYS) <= elapsed <= 1.1 * sum(SPEC_DELAYS)
    cur = await db.execute("SELECT attempt FROM delivery_attempts WHERE delivery_id = %s ORDER BY attempt", (did,))
    assert [r["attempt"] for r in await cur.fetchall()] == list(range(1, 9))
    assert len(receiver.posts("/sched")) == 8
    # 38 h of failures is not 5 days: the endpoint stays enabled
    ep = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert ep.endpoint is not None and ep.endpoint.enabled and ep.endpoint.notices == []


async def test_failing_for_five_days_disables_with_a_notice_and_enabling_resumes_pending(
    start_service: Any, receiver: Any, db: Any, h: Any
) -> None:
    clock = h.FakeClock()
    # Retries far beyond the test's days: only the three first attempts happen before re-enabling.
    svc = await start_service(
        workers=("rpc_responders", "dispatcher"), clock=clock, retry_delays_seconds="2000000", max_attempts=8
    )
    tenant = new_id("ten")
    wh = (await create(svc.nc, tenant, receiver.url("/fail"))).endpoint
    assert wh is not None
    receiver.script("/fail", *[h.Reply(500)] * 3)
    first = (await send_test(svc.nc, tenant, wh.webhook_id)).delivery
    assert first is not None
    await wait_settled(db, first.delivery_id, 1, h)
    clock.advance(4 * 86400)  # four days on, still failing: enabled
    second = (await send_test(svc.nc, tenant, wh.webhook_id)).delivery
    assert second is not None
    await wait_settled(db, second.delivery_id, 1, h)
    ep = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert ep.endpoint is not None and ep.endpoint.enabled
    clock.advance(86400)  # five days since the first failure
    third = (await send_test(svc.nc, tenant, wh.webhook_id)).delivery
    assert third is not None
    await wait_settled(db, third.delivery_id, 1, h)
    ep = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert ep.endpoint is not None
    assert (ep.endpoint.enabled, ep.endpoint.disabled_reason, ep.endpoint.disabled_at) == (False, "failing", clock.now)
    assert [(n.type, n.reason, n.created_at) for n in ep.endpoint.notices] == [
        ("webhook.disabled", "failing", clock.now)
    ]
    # While disabled: nothing is attempted (however late), no test event, no retry.
    clock.advance(3 * 86400)
    await asyncio.sleep(0.5)
    assert len(receiver.posts("/fail")) == 3
    assert (await send_test(svc.nc, tenant, wh.webhook_id)).error.code == "conflict"  # type: ignore[union-attr]
    no_retry = await call(
        svc.nc,
        subjects.RPC_WEBHOOKS_DELIVERIES_RETRY,
        WebhookDeliveryRequest(tenant_id=tenant, webhook_id=wh.webhook_id, delivery_id=first.delivery_id),
        WebhookDeliveryReply,
    )
    assert no_retry.error is not None and no_retry.error.code == "conflict"
    statuses = {(await delivery_row(db, d.delivery_id))["status"] for d in (first, second, third)}
    assert statuses == {"pending"}  # still pending: kept for when it is enabled again

    on = await patch(svc.nc, tenant, wh.webhook_id, enabled=True)
    assert on.endpoint is not None and on.endpoint.enabled and on.endpoint.disabled_reason is None
    await receiver.wait_for("/fail", 6)  # the three pending ones go out at once
    for d in (first, second, third):
        row = await wait_settled(db, d.delivery_id, 2, h)
        assert row["status"] == "succeeded"
    ep = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert ep.endpoint is not None and len(ep.endpoint.notices) == 1  # the record stays
    # ... and one webhook.disabled event went to the outbox, in the disabling transaction.
    [disabled] = await disabled_events(db, wh.webhook_id)
    assert (disabled.tenant_id, disabled.reason, disabled.disabled_at) == (
        tenant,
        "failing",
        ep.endpoint.notices[0].created_at,
    )
    assert disabled.failing_since is not None
    assert (ep.endpoint.notices[0].created_at - disabled.failing_since) >= timedelta(days=5)
    assert (disabled.last_status_code, disabled.last_error) == (500, "http_500")


async def test_410_disables_at_once_keeps_pending_and_resumes_on_enable(
    start_service: Any, receiver: Any, db: Any, h: Any
) -> None:
    clock = h.FakeClock()
    svc = await start_service(workers=("rpc_responders", "dispatcher"), clock=clock, **SPEC)
    tenant = new_id("ten")
    wh = (await create(svc.nc, tenant, receiver.url("/g"))).endpoint
    assert wh is not None
    receiver.script("/g", h.Reply(500), h.Reply(410))
    waiting = (await send_test(svc.nc, tenant, wh.webhook_id)).delivery
    assert waiting is not None
    await wait_settled(db, waiting.delivery_id, 1, h)  # pending for its 5 s retry
    gone = (await send_test(svc.nc, tenant, wh.webhook_id)).delivery
    assert gone is not None
    row = await wait_settled(db, gone.delivery_id, 1, h)
    assert (row["status"], row["last_status_code"]) == ("failed", 410)
    ep = await get_endpoint(svc.nc, tenant, wh.webhook_id)
    assert ep.endpoint is not None
    assert (ep.endpoint.enabled, ep.endpoint.disabled_reason) == (False, "gone")
    assert [(n.type, n.reason) for n in ep.endpoint.notices] == [("webhook.disabled", "gone")]
    [disabled] = await disabled_events(db, wh.webhook_id)
    assert (disabled.reason, disabled.failing_since, disabled.last_status_code) == ("gone", None, 410)
    clock.advance(60)
    await asyncio.sleep(0.4)
    assert len(receiver.posts("/g")) == 2 and (await delivery_row(db, waiting.delivery_id))["status"] == "pending"
    assert (await patch(svc.nc, tenant, wh.webhook_id, enabled=True)).error is None
    row = await wait_settled(db, waiting.delivery_id, 2, h)
    assert row["status"] == "succeeded"


# ----------------------------------------------------------------------------- replicas, restart


async def test_two_replicas_and_a_restart_make_every_scheduled_attempt_exactly_once(
    start_service: Any, receiver: Any, db: Any, h: Any
) -> None:
    clock = h.FakeClock()
    first = await start_service(workers=("rpc_responders", "dispatcher"), clock=clock, **SPEC)
    second = await start_service(workers=("dispatcher",), clock=clock, **SPEC)
    tenant = new_id("ten")
    wh = (await create(first.nc, tenant, receiver.url("/rep"))).endpoint
    assert wh is not None
    receiver.script("/rep", *[h.Reply(500)] * 200)
    ids = []
    for _ in range(6):
        test = (await send_test(first.nc, tenant, wh.webhook_id)).delivery
        assert test is not None
        ids.append(test.delivery_id)

    async def step(attempt: int) -> None:
        rows = [await wait_settled(db, i, attempt, h) for i in ids]
        clock.set(max(r["next_attempt_at"] for r in rows))

    for attempt in (1, 2, 3):
        await step(attempt)
    # Restart: the second replica stops mid-schedule (the first keeps going), then comes back.
    second.runtime.stop.set()
    await asyncio.wait(second.tasks, timeout=10)
    await step(4)
    third = await start_service(workers=("dispatcher",), clock=clock, **SPEC)
    for attempt in (5, 6, 7):
        await step(attempt)
    # ... and the first one stops too: the restarted one alone finishes the schedule.
    first.runtime.stop.set()
    await asyncio.wait(first.tasks, timeout=10)
    for i in ids:
        row = await wait_settled(db, i, 8, h)
        assert row["status"] == "failed"
    assert third.tasks and not any(t.done() for t in third.tasks)
    per_event: dict[str, int] = {}
    for post in receiver.posts("/rep"):
        per_event[post.headers["webhook-id"]] = per_event.get(post.headers["webhook-id"], 0) + 1
    assert sorted(per_event.values()) == [8] * 6  # 6 deliveries x 8 attempts, none twice
    cur = await db.execute(
        "SELECT delivery_id, array_agg(attempt ORDER BY attempt) AS n FROM delivery_attempts"
        " WHERE endpoint_id = %s GROUP BY delivery_id",
        (wh.webhook_id,),
    )
    assert [r["n"] for r in await cur.fetchall()] == [list(range(1, 9))] * 6


# ----------------------------------------------------------------------------- isolation


async def test_a_hanging_endpoint_does_not_delay_a_healthy_one(start_service: Any, receiver: Any, h: Any) -> None:
    """Per-endpoint concurrency: 4 attempts hang 3 s each at one endpoint while 60 events reach the
    other in well under a second each (the full 15 s / 1,000 events measurement is in bench/)."""
    svc = await start_service(
        workers=("rpc_responders", "dispatcher"), concurrency=16, per_endpoint_concurrency=4, timeout_seconds=3
    )
    tenant = new_id("ten")
    slow = (await create(svc.nc, tenant, receiver.url("/slow"))).endpoint
    fast = (await create(svc.nc, tenant, receiver.url("/fast"))).endpoint
    assert slow is not None and fast is not None
    receiver.script("/slow", *[h.Reply(200, delay=3.0)] * 100)
    sent_at: dict[str, float] = {}
    for i in range(60):
        await send_test(svc.nc, tenant, slow.webhook_id)
        reply = await send_test(svc.nc, tenant, fast.webhook_id)
        assert reply.delivery is not None
        sent_at[reply.delivery.event_id] = time.monotonic()
        if i % 10 == 9:
            await asyncio.sleep(0.05)
    posts = await receiver.wait_for("/fast", 60, timeout=20)
    lags = sorted(p.at - sent_at[p.headers["webhook-id"]] for p in posts)
    assert lags[int(len(lags) * 0.99) - 1] < 1.0, lags[-5:]
    assert receiver.max_active.get("/slow", 0) <= 4


# ----------------------------------------------------------------------------- event types


async def test_suppressed_and_unsubscribed_are_delivered_with_their_fields(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    """`EmailSuppressed.recipients` are SuppressedRecipient{email, reason}: the payload lists the
    addresses and the reasons. `EmailUnsubscribed` (issue 22: a recipient unsubscribed) is the
    webhook `email.unsubscribed` with who and how; an endpoint filtering on other types does not
    get it. Every message is acked, none dead-lettered."""
    from mailroom_contracts.events import (
        Address,
        EmailDelivered,
        EmailQueued,
        EmailSuppressed,
        EmailUnsubscribed,
        SuppressedRecipient,
    )
    from mailroom_contracts.streams import WEBHOOKS_EMAIL

    svc = await start_service()
    tenant = new_id("ten")
    await create(svc.nc, tenant, receiver.url("/types"), ["*"])
    await create(svc.nc, tenant, receiver.url("/unsub-only"), ["email.unsubscribed"])
    await create(svc.nc, tenant, receiver.url("/delivered-only"), ["email.delivered"])
    email_id = new_id("msg")
    at = h.FakeClock().now
    common: dict[str, Any] = {"tenant_id": tenant, "email_id": email_id, "mode": "live"}
    queued = EmailQueued(
        event_id=new_id("evt"),
        occurred_at=at,
        from_=Address(email="hi@acme.test"),
        to=[Address(email="ok@example.com"), Address(email="gone@example.com")],
        subject="Hi",
        html="<p>x</p>",
        tags={"k": "v"},
        metadata={"user": 7},
        created_at=at,
        **common,
    )
    suppressed = EmailSuppressed(
        event_id=new_id("evt"),
        occurred_at=at,
        recipients=[SuppressedRecipient(email="gone@example.com", reason="bounce")],
        **common,
    )
    unsubscribed = EmailUnsubscribed(
        event_id=new_id("evt"),
        occurred_at=at + timedelta(seconds=3),
        recipients=["ok@example.com"],
        source="UnsubscribeHeader",
        contact_list="news",
        topics=["weekly"],
        provider_message_id="pm-1",
        **common,
    )
    delivered = EmailDelivered(event_id=new_id("evt"), occurred_at=at, recipients=["ok@example.com"], **common)
    for event in (queued, suppressed, unsubscribed, delivered):
        await publisher.publish(event)
    await receiver.wait_for("/types", 4)
    [only] = await receiver.wait_for("/unsub-only", 1)
    await receiver.wait_for("/delivered-only", 1)
    await asyncio.sleep(0.5)
    posts = {p.json()["type"]: p for p in receiver.posts("/types")}
    assert len(receiver.posts("/types")) == 4
    assert set(posts) == {"email.queued", "email.suppressed", "email.unsubscribed", "email.delivered"}
    assert len(receiver.posts("/unsub-only")) == 1 and len(receiver.posts("/delivered-only")) == 1
    data = posts["email.suppressed"].json()["data"]
    assert data["suppressed"] == [{"email": "gone@example.com", "reason": "bounce"}]
    assert (data["recipients"], data["recipient"], data["from"], data["tags"]) == (
        ["gone@example.com"],
        "gone@example.com",
        "hi@acme.test",
        {"k": "v"},
    )
    unsub = only.json()
    assert unsub == posts["email.unsubscribed"].json()
    assert unsub["id"] == unsubscribed.event_id and unsub["type"] == "email.unsubscribed"
    assert unsub["created_at"] == (at + timedelta(seconds=3)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert unsub["data"] == {
        "email_id": email_id,
        "from": "hi@acme.test",
        "to": ["ok@example.com", "gone@example.com"],
        "subject": "Hi",
        "recipient": "ok@example.com",
        "recipients": ["ok@example.com"],
        "tags": {"k": "v"},
        "metadata": {"user": 7},
        "mode": "live",
        "provider_message_id": "pm-1",
        "unsubscribe": {
            "source": "UnsubscribeHeader",
            "contact_list": "news",
            "unsubscribe_all": False,
            "topics": ["weekly"],
        },
    }
    assert b"<p>x</p>" not in only.body

    async def all_acked() -> bool:
        info = await publisher.js.consumer_info(WEBHOOKS_EMAIL.stream, WEBHOOKS_EMAIL.durable)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await h.eventually(all_acked)
    dlq = await publisher.js.stream_info("MAILROOM_DLQ")
    before = dlq.state.messages
    await asyncio.sleep(0.3)
    assert (await publisher.js.stream_info("MAILROOM_DLQ")).state.messages == before
