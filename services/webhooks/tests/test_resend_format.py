"""Issue 21: endpoints of the `resend` format (created through /resend) get Resend's payload shape
and svix-* headers, verified here by the official Resend SDK's `Webhooks.verify`; `standard`
endpoints beside them are unchanged. Real service, real JetStream, a real local receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import resend
from mailroom_contracts import subjects
from mailroom_contracts.events import Address, EmailBounced, EmailClicked, EmailDelivered, EmailQueued, EmailSent
from mailroom_contracts.rpc import CreateWebhookReply, CreateWebhookRequest, ListWebhooksReply, ListWebhooksRequest
from mailroom_kit import rpc
from mailroom_kit.ids import new_id
from standardwebhooks.webhooks import Webhook


def now() -> datetime:
    return datetime.now(UTC)


async def create(nc: Any, request: CreateWebhookRequest) -> CreateWebhookReply:
    return await rpc.request(nc, subjects.RPC_WEBHOOKS_CREATE, request, CreateWebhookReply)


def svix_verify(post: Any, secret: str) -> Any:
    return resend.Webhooks.verify(
        {
            "payload": post.body.decode(),
            "headers": {
                "id": post.headers["svix-id"],
                "timestamp": post.headers["svix-timestamp"],
                "signature": post.headers["svix-signature"],
            },
            "webhook_secret": secret,
        }
    )


async def test_resend_endpoints_get_resends_shape_and_svix_headers(
    start_service: Any, publisher: Any, receiver: Any, h: Any
) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    events = ["email.sent", "email.delivered", "email.bounced", "email.clicked"]
    rs = await create(
        svc.nc, CreateWebhookRequest(tenant_id=tenant, url=receiver.url("/resend"), events=events, format="resend")
    )
    std = await create(svc.nc, CreateWebhookRequest(tenant_id=tenant, url=receiver.url("/std"), events=events))
    assert rs.error is None and std.error is None and rs.secret and std.secret
    assert rs.endpoint is not None and rs.endpoint.format == "resend"
    assert std.endpoint is not None and std.endpoint.format == "standard"
    listed = await rpc.request(
        svc.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id=tenant), ListWebhooksReply
    )
    assert {e.webhook_id: e.format for e in listed.data} == {
        rs.endpoint.webhook_id: "resend",
        std.endpoint.webhook_id: "standard",
    }

    common: dict[str, Any] = {"tenant_id": tenant, "mode": "live"}
    q = EmailQueued(
        event_id=new_id("evt"),
        occurred_at=now(),
        email_id=new_id("msg"),
        from_=Address(email="noreply@mail.acme.com", name="Acme"),
        to=[Address(email="ada@example.com", name="Ada")],
        subject="Your receipt",
        html="<p>secret body</p>",
        tags={"campaign": "receipts"},
        created_at=now(),
        **common,
    )
    email = {"email_id": q.email_id, **common}
    sent = EmailSent(
        event_id=new_id("evt"), occurred_at=now(), provider="simulator", provider_message_id="pm-1", **email
    )
    delivered = EmailDelivered(event_id=new_id("evt"), occurred_at=now(), recipients=["ada@example.com"], **email)
    bounced = EmailBounced(
        event_id=new_id("evt"),
        occurred_at=now(),
        recipients=["ada@example.com"],
        bounce_type="Transient",
        bounce_subtype="MailboxFull",
        diagnostic_code="smtp; 452 4.2.2 mailbox full",
        **email,
    )
    clicked = EmailClicked(
        event_id=new_id("evt"),
        occurred_at=now(),
        link="https://acme.test/o/1",
        ip="192.0.2.9",
        user_agent="ua/1",
        **email,
    )
    for event in (q, sent, delivered, bounced, clicked):
        await publisher.publish(event)

    posts = await receiver.wait_for("/resend", 4)
    std_posts = await receiver.wait_for("/std", 4)
    by_type: dict[str, Any] = {}
    for post in posts:
        assert "webhook-signature" not in post.headers and post.headers["content-type"] == "application/json"
        verified = svix_verify(post, rs.secret)
        assert verified == json.loads(post.body)
        assert set(verified) == {"type", "created_at", "data"}
        by_type[verified["type"]] = (post, verified)
    assert set(by_type) == set(events)
    post, got = by_type["email.delivered"]
    assert post.headers["svix-id"] == delivered.event_id
    assert got["created_at"].endswith("Z")
    assert got["data"] == {
        "created_at": got["created_at"],
        "email_id": q.email_id,
        "from": "Acme <noreply@mail.acme.com>",
        "to": ["ada@example.com"],
        "subject": "Your receipt",
        "tags": {"campaign": "receipts"},
    }
    assert by_type["email.bounced"][1]["data"]["bounce"] == {
        "type": "Temporary",
        "subType": "MailboxFull",
        "message": "smtp; 452 4.2.2 mailbox full",
        "diagnosticCode": "smtp; 452 4.2.2 mailbox full",
    }
    click = by_type["email.clicked"][1]["data"]["click"]
    assert click == {
        "ipAddress": "192.0.2.9",
        "link": "https://acme.test/o/1",
        "timestamp": by_type["email.clicked"][1]["created_at"],
        "userAgent": "ua/1",
    }
    assert all(b"secret body" not in p.body for p in posts)
    # A wrong secret is refused by the SDK (the signature is real, not accepted blindly).
    wrong = "whsec_" + "A" * 32
    try:
        svix_verify(posts[0], wrong)
    except ValueError as exc:
        assert "no matching signature" in str(exc)
    else:
        raise AssertionError("a wrong secret verified")

    # The standard endpoint beside it is unchanged: Standard Webhooks headers, Mailroom's payload.
    for post in std_posts:
        assert "svix-id" not in post.headers
        assert Webhook(std.secret).verify(post.body.decode(), post.headers)["id"] == post.headers["webhook-id"]
        assert "recipients" in post.json()["data"]


async def test_unknown_format_is_refused_and_creates_nothing(start_service: Any, receiver: Any) -> None:
    svc = await start_service()
    tenant = new_id("ten")
    reply = await create(
        svc.nc, CreateWebhookRequest(tenant_id=tenant, url=receiver.url("/x"), events=["email.sent"], format="svix")
    )
    assert reply.error is not None and reply.error.code == "validation_error" and reply.error.param == "format"
    listed = await rpc.request(
        svc.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id=tenant), ListWebhooksReply
    )
    assert listed.data == []
