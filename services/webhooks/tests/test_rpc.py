"""Webhook endpoints over the real NATS request/reply responders and real Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from mailroom_contracts import subjects
from mailroom_contracts.rpc import (
    CreateWebhookReply,
    CreateWebhookRequest,
    DeleteWebhookRequest,
    GetWebhookRequest,
    ListWebhooksReply,
    ListWebhooksRequest,
    WebhookReply,
)
from mailroom_kit import rpc
from mailroom_kit.ids import has_prefix
from mailroom_webhooks.signing import SecretBox


async def create(nc: Any, tenant: str, url: str, events: list[str], **kw: Any) -> CreateWebhookReply:
    return await rpc.request(
        nc,
        subjects.RPC_WEBHOOKS_CREATE,
        CreateWebhookRequest(tenant_id=tenant, url=url, events=events, **kw),
        CreateWebhookReply,
    )


async def test_create_list_get_delete_scoped_to_tenant(start_service: Any, db: Any, h: Any) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    reply = await create(
        svc.nc,
        "ten_a",
        "https://hooks.example.com/mailroom?x=1",
        ["email.delivered", "email.bounced"],
        description="prod",
    )
    assert reply.error is None and reply.endpoint is not None and reply.secret is not None
    endpoint = reply.endpoint
    assert has_prefix(endpoint.webhook_id, "wh")
    assert endpoint.tenant_id == "ten_a" and endpoint.enabled and endpoint.description == "prod"
    assert endpoint.events == ["email.delivered", "email.bounced"]
    assert reply.secret.startswith("whsec_") and len(reply.secret) == len("whsec_") + 32

    # The secret is stored only encrypted.
    row = await (await db.execute("SELECT * FROM endpoints WHERE id = %s", (endpoint.webhook_id,))).fetchone()
    stored = " ".join(str(v) for v in row.values())
    assert reply.secret not in stored and reply.secret.removeprefix("whsec_") not in stored
    assert SecretBox([h.FERNET_KEY]).decrypt(row["secret_encrypted"]) == reply.secret

    star = await create(svc.nc, "ten_a", "https://other.example.com/", ["*"])
    assert star.endpoint is not None and star.endpoint.events == ["*"]

    listed = await rpc.request(
        svc.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id="ten_a"), ListWebhooksReply
    )
    assert {e.webhook_id for e in listed.data} == {endpoint.webhook_id, star.endpoint.webhook_id}
    got = await rpc.request(
        svc.nc,
        subjects.RPC_WEBHOOKS_GET,
        GetWebhookRequest(tenant_id="ten_a", webhook_id=endpoint.webhook_id),
        WebhookReply,
    )
    assert got.endpoint == endpoint

    # Another tenant sees nothing and cannot delete.
    other = await rpc.request(
        svc.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id="ten_b"), ListWebhooksReply
    )
    assert other.data == [] and other.error is None
    for subject, req in (
        (subjects.RPC_WEBHOOKS_GET, GetWebhookRequest(tenant_id="ten_b", webhook_id=endpoint.webhook_id)),
        (
            subjects.RPC_WEBHOOKS_DELETE,
            DeleteWebhookRequest(tenant_id="ten_b", webhook_id=endpoint.webhook_id),
        ),
    ):
        denied = await rpc.request(svc.nc, subject, req, WebhookReply)
        assert denied.endpoint is None and denied.error is not None and denied.error.code == "not_found"

    deleted = await rpc.request(
        svc.nc,
        subjects.RPC_WEBHOOKS_DELETE,
        DeleteWebhookRequest(tenant_id="ten_a", webhook_id=endpoint.webhook_id),
        WebhookReply,
    )
    assert deleted.error is None and deleted.endpoint is not None and not deleted.endpoint.enabled
    gone = await rpc.request(
        svc.nc,
        subjects.RPC_WEBHOOKS_GET,
        GetWebhookRequest(tenant_id="ten_a", webhook_id=endpoint.webhook_id),
        WebhookReply,
    )
    assert gone.error is not None and gone.error.code == "not_found"
    again = await rpc.request(
        svc.nc,
        subjects.RPC_WEBHOOKS_DELETE,
        DeleteWebhookRequest(tenant_id="ten_a", webhook_id=endpoint.webhook_id),
        WebhookReply,
    )
    assert again.error is not None and again.error.code == "not_found"
    listed = await rpc.request(
        svc.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id="ten_a"), ListWebhooksReply
    )
    assert [e.webhook_id for e in listed.data] == [star.endpoint.webhook_id]
    # Soft delete: the row stays (delivery history), marked deleted.
    row = await (await db.execute("SELECT deleted_at FROM endpoints WHERE id = %s", (endpoint.webhook_id,))).fetchone()
    assert row["deleted_at"] is not None


@pytest.mark.parametrize(
    ("url", "events", "param"),
    [
        ("http://hooks.example.com/", ["*"], "url"),  # http not allowed
        ("ftp://hooks.example.com/", ["*"], "url"),
        ("hooks.example.com/path", ["*"], "url"),  # not absolute
        ("https:///path", ["*"], "url"),  # no host
        ("https://user:pw@hooks.example.com/", ["*"], "url"),
        ("https://hooks.example.com/" + "a" * 2030, ["*"], "url"),
        ("https://10.1.2.3/hook", ["*"], "url"),  # private IP literal
        ("https://127.0.0.1/hook", ["*"], "url"),
        ("https://169.254.169.254/latest/meta-data", ["*"], "url"),
        ("https://100.64.0.1/", ["*"], "url"),
        ("https://[::1]/", ["*"], "url"),
        ("https://[fd00:ec2::254]/", ["*"], "url"),
        ("https://2130706433/", ["*"], "url"),  # 127.0.0.1 spelled as a number
        ("https://hooks.example.com/", [], "events"),
        ("https://hooks.example.com/", ["email.delivered", "email.nope"], "events[1]"),
        ("https://hooks.example.com/", ["email.delivered", "*"], "events[1]"),
    ],
)
async def test_create_validation_errors(start_service: Any, url: str, events: list[str], param: str) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    reply = await create(svc.nc, "ten_v", url, events)
    assert reply.endpoint is None and reply.secret is None
    assert reply.error is not None and reply.error.code == "validation_error" and reply.error.param == param


async def test_allow_listed_ip_literal_and_http_when_allowed(start_service: Any) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=True, allowed_cidrs="127.0.0.0/8")
    ok = await create(svc.nc, "ten_l", "http://127.0.0.1:9/hook", ["email.sent"])
    assert ok.error is None and ok.endpoint is not None
    still_private = await create(svc.nc, "ten_l", "http://10.0.0.1/hook", ["email.sent"])
    assert still_private.error is not None and still_private.error.param == "url"


async def test_undecodable_request_is_a_validation_error(start_service: Any) -> None:
    svc = await start_service(workers=("rpc_responders",))
    msg = await svc.nc.request(subjects.RPC_WEBHOOKS_CREATE, b'{"tenant_id": 1}', timeout=5)
    assert b"validation_error" in msg.data
