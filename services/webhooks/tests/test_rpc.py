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
    assert b"validation_error" in msg.data and b'"kind":"validation"' in msg.data


# ----------------------------------------------------------------------------- issue 14: error classes


@pytest.mark.parametrize(
    ("description", "events", "param"),
    [
        ("prod\x00", ["*"], "description"),  # Postgres refuses NUL in text: was `internal` → 503
        ("a\x01b", ["*"], "description"),
        ("a\x1bb", ["*"], "description"),
        ("a\x85b", ["*"], "description"),
        ("x" * 513, ["*"], "description"),
        (None, ["email.sent\x00"], "events[0]"),
        (None, ["email.sent"] * 65, "events"),
    ],
)
async def test_bad_input_is_a_validation_error_not_internal(
    start_service: Any, db: Any, description: str | None, events: list[str], param: str
) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    reply = await create(svc.nc, "ten_v", "https://hooks.example.com/", events, description=description)
    assert reply.endpoint is None and reply.error is not None
    assert (reply.error.code, reply.error.kind, reply.error.param) == ("validation_error", "validation", param)
    assert "\x00" not in reply.error.message
    assert (await (await db.execute("SELECT count(*) AS n FROM endpoints")).fetchone())["n"] == 0


async def test_a_description_with_line_breaks_is_kept(start_service: Any) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    reply = await create(svc.nc, "ten_v", "https://hooks.example.com/", ["*"], description="line 1\n\tline 2 ✓")
    assert reply.error is None and reply.endpoint is not None
    assert reply.endpoint.description == "line 1\n\tline 2 ✓"


@pytest.mark.parametrize(
    "webhook_id",
    ["wh_\x00", "wh_", "", "wh_" + "0" * 25 + "\x00", "WH_" + "0" * 26, "wh_" + "0" * 25 + "u", "wh_" + "0" * 5000],
)
async def test_a_malformed_webhook_id_is_not_found(start_service: Any, webhook_id: str) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    for subject, req in (
        (subjects.RPC_WEBHOOKS_GET, GetWebhookRequest(tenant_id="ten_a", webhook_id=webhook_id)),
        (subjects.RPC_WEBHOOKS_DELETE, DeleteWebhookRequest(tenant_id="ten_a", webhook_id=webhook_id)),
    ):
        reply = await rpc.request(svc.nc, subject, req, WebhookReply)
        assert reply.endpoint is None and reply.error is not None
        assert (reply.error.code, reply.error.kind) == ("not_found", "not_found")


@pytest.mark.parametrize("tenant_id", ["ten_\x00", "", "t" * 65, "ten_é"])
async def test_a_malformed_tenant_id_is_a_validation_error(start_service: Any, tenant_id: str) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    well_formed = "wh_" + "0" * 26
    replies = [
        (await create(svc.nc, tenant_id, "https://hooks.example.com/", ["*"])).error,
        (
            await rpc.request(
                svc.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest(tenant_id=tenant_id), ListWebhooksReply
            )
        ).error,
        (
            await rpc.request(
                svc.nc,
                subjects.RPC_WEBHOOKS_GET,
                GetWebhookRequest(tenant_id=tenant_id, webhook_id=well_formed),
                WebhookReply,
            )
        ).error,
    ]
    for error in replies:
        assert error is not None
        assert (error.code, error.kind, error.param) == ("validation_error", "validation", "tenant_id")


async def test_every_service_error_names_its_class(start_service: Any) -> None:
    svc = await start_service(workers=("rpc_responders",), allow_http=False, allowed_cidrs="")
    invalid = await create(svc.nc, "ten_k", "http://hooks.example.com/", ["*"])
    assert invalid.error is not None and invalid.error.kind == "validation"
    missing = await rpc.request(
        svc.nc,
        subjects.RPC_WEBHOOKS_GET,
        GetWebhookRequest(tenant_id="ten_k", webhook_id="wh_" + "0" * 26),
        WebhookReply,
    )
    assert missing.error is not None and (missing.error.code, missing.error.kind) == ("not_found", "not_found")
