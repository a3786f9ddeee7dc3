"""POST/GET /v1/domains and /v1/webhooks over request/reply, against small real NATS responders
that honour the contracts (the real domains and webhooks services are covered end to end)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from api_testkit import bearer, make_tenant
from mailroom_contracts import subjects
from mailroom_contracts.events import DomainRecord, DomainSnapshot
from mailroom_contracts.rpc import (
    CreateDomainRequest,
    CreateWebhookReply,
    CreateWebhookRequest,
    DeleteWebhookRequest,
    DomainReply,
    GetWebhookRequest,
    ListWebhooksReply,
    ListWebhooksRequest,
    RpcError,
    WebhookEndpoint,
    WebhookReply,
)
from mailroom_kit import rpc
from mailroom_kit.runtime import Runtime

TAKEN = "taken.example.test"


def records(name: str, mail_from: str) -> list[DomainRecord]:
    dkim = [
        DomainRecord(purpose="dkim", type="CNAME", name=f"tok{i}._domainkey.{name}", value=f"tok{i}.dkim.amazonses.com")
        for i in range(3)
    ]
    return [
        *dkim,
        DomainRecord(
            purpose="mail_from_mx",
            type="MX",
            name=mail_from,
            value="feedback-smtp.us-east-1.amazonses.com",
            priority=10,
        ),
        DomainRecord(purpose="mail_from_spf", type="TXT", name=mail_from, value="v=spf1 include:amazonses.com ~all"),
        DomainRecord(purpose="dmarc", type="TXT", name=f"_dmarc.{name}", value="v=DMARC1; p=none;", required=False),
    ]


async def create_domain(req: CreateDomainRequest) -> DomainReply:
    if "." not in req.name:
        return DomainReply(error=RpcError(code="validation_error", message="not a domain name", param="name"))
    if req.name == TAKEN:
        return DomainReply(error=RpcError(code="conflict", message="domain is verified by another account"))
    if req.name == "flaky.example.test":
        return DomainReply(error=RpcError(code="unavailable", message="SES is unavailable"))
    mail_from = f"{req.mail_from_subdomain}.{req.name}"
    return DomainReply(
        domain=DomainSnapshot(
            domain_id=f"dom_{secrets.token_hex(13)}",
            tenant_id=req.tenant_id,
            name=req.name,
            status="pending",
            region="us-east-1",
            mail_from_domain=mail_from,
            records=records(req.name, mail_from),
            track_opens=req.track_opens,
            track_clicks=req.track_clicks,
            created_at=datetime.now(UTC),
        )
    )


class WebhookStore:
    def __init__(self) -> None:
        self.endpoints: dict[str, WebhookEndpoint] = {}

    async def create(self, req: CreateWebhookRequest) -> CreateWebhookReply:
        if not req.url.startswith("https://"):
            return CreateWebhookReply(error=RpcError(code="validation_error", message="must be https", param="url"))
        if not req.events:
            return CreateWebhookReply(error=RpcError(code="validation_error", message="no events", param="events"))
        ep = WebhookEndpoint(
            webhook_id=f"wh_{secrets.token_hex(13)}",
            tenant_id=req.tenant_id,
            url=req.url,
            events=req.events,
            description=req.description,
            created_at=datetime.now(UTC),
        )
        self.endpoints[ep.webhook_id] = ep
        return CreateWebhookReply(endpoint=ep, secret="whsec_" + secrets.token_urlsafe(24))

    async def list(self, req: ListWebhooksRequest) -> ListWebhooksReply:
        return ListWebhooksReply(data=[e for e in self.endpoints.values() if e.tenant_id == req.tenant_id])

    def _own(self, tenant_id: str, webhook_id: str) -> WebhookEndpoint | None:
        ep = self.endpoints.get(webhook_id)
        return ep if ep is not None and ep.tenant_id == tenant_id else None

    async def get(self, req: GetWebhookRequest) -> WebhookReply:
        ep = self._own(req.tenant_id, req.webhook_id)
        if ep is None:
            return WebhookReply(error=RpcError(code="not_found", message="webhook not found"))
        return WebhookReply(endpoint=ep)

    async def delete(self, req: DeleteWebhookRequest) -> WebhookReply:
        ep = self._own(req.tenant_id, req.webhook_id)
        if ep is None:
            return WebhookReply(error=RpcError(code="not_found", message="webhook not found"))
        del self.endpoints[req.webhook_id]
        return WebhookReply(endpoint=ep)


@pytest.fixture
async def responders(runtime: Runtime) -> AsyncIterator[WebhookStore]:
    store = WebhookStore()
    subs = [
        await rpc.serve(runtime.nc, subjects.RPC_DOMAINS_CREATE, CreateDomainRequest, create_domain, queue="domains"),
        await rpc.serve(runtime.nc, subjects.RPC_WEBHOOKS_CREATE, CreateWebhookRequest, store.create, queue="wh"),
        await rpc.serve(runtime.nc, subjects.RPC_WEBHOOKS_LIST, ListWebhooksRequest, store.list, queue="wh"),
        await rpc.serve(runtime.nc, subjects.RPC_WEBHOOKS_GET, GetWebhookRequest, store.get, queue="wh"),
        await rpc.serve(runtime.nc, subjects.RPC_WEBHOOKS_DELETE, DeleteWebhookRequest, store.delete, queue="wh"),
    ]
    await runtime.nc.flush()
    yield store
    for sub in subs:
        await sub.unsubscribe()


async def test_create_domain_returns_records_and_fills_the_read_model(
    responders: WebhookStore, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    resp = await client.post(
        "/v1/domains", json={"name": "mail.acme.test", "track_opens": True}, headers=bearer(tenant.live)
    )
    assert resp.status_code == 201, resp.text
    dom = resp.json()
    assert dom["id"].startswith("dom_") and dom["status"] == "pending" and dom["region"] == "us-east-1"
    assert dom["mail_from_domain"] == "bounce.mail.acme.test"
    assert (dom["track_opens"], dom["track_clicks"], dom["last_checked_at"]) == (True, False, None)
    assert [r["purpose"] for r in dom["records"]] == ["dkim"] * 3 + ["mail_from_mx", "mail_from_spf", "dmarc"]
    mx = dom["records"][3]
    assert (mx["type"], mx["priority"], mx["status"], mx["required"]) == ("MX", 10, "pending", True)
    assert set(dom) == {
        "id",
        "name",
        "status",
        "region",
        "records",
        "mail_from_domain",
        "track_opens",
        "track_clicks",
        "created_at",
        "last_checked_at",
    }
    got = await client.get(f"/v1/domains/{dom['id']}", headers=bearer(tenant.live))
    assert got.status_code == 200 and got.json() == dom
    listed = await client.get("/v1/domains", headers=bearer(tenant.live))
    assert listed.json()["data"] == [dom]
    # Pending: live keys cannot send from it yet, test keys can.
    body = {"from": "hi@mail.acme.test", "to": "a@example.test", "subject": "s", "text": "t"}
    resp = await client.post("/v1/emails", json=body, headers=bearer(tenant.live))
    assert (resp.status_code, resp.json()["error"]) == (403, "domain_not_verified")
    assert (await client.post("/v1/emails", json=body, headers=bearer(tenant.test))).status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"name": "nodots"}, 422, "validation_error", "name"),
        ({"name": TAKEN}, 409, "conflict", None),
        ({"name": "flaky.example.test"}, 503, "unavailable", None),
        ({"name": 5}, 422, "validation_error", "name"),
        ({"name": "x.test", "dkim": True}, 422, "validation_error", "dkim"),
        ({}, 422, "validation_error", "name"),
    ],
)
async def test_create_domain_errors(
    body: dict[str, object],
    status: int,
    code: str,
    param: str | None,
    responders: WebhookStore,
    client: httpx.AsyncClient,
    runtime: Runtime,
) -> None:
    tenant = await make_tenant(runtime)
    resp = await client.post("/v1/domains", json=body, headers=bearer(tenant.live))
    assert resp.status_code == status, resp.text
    assert (resp.json()["error"], resp.json()["param"]) == (code, param)
    if status == 503:
        assert resp.headers.get("retry-after")
    assert (await client.get("/v1/domains", headers=bearer(tenant.live))).json()["data"] == []


async def test_domains_service_down_is_503(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    resp = await client.post("/v1/domains", json={"name": "mail.down.test"}, headers=bearer(tenant.live))
    assert (resp.status_code, resp.json()["error"]) == (503, "unavailable")
    assert resp.headers.get("retry-after") and resp.headers.get("x-request-id")
    resp = await client.get("/v1/webhooks", headers=bearer(tenant.live))
    assert (resp.status_code, resp.json()["error"]) == (503, "unavailable")


async def test_webhooks_round_trip(responders: WebhookStore, client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant, other = await make_tenant(runtime), await make_tenant(runtime)
    resp = await client.post(
        "/v1/webhooks",
        json={
            "url": "https://hooks.acme.test/mailroom",
            "events": ["email.delivered", "email.bounced"],
            "description": "prod",
        },
        headers=bearer(tenant.live),
    )
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["id"].startswith("wh_") and created["secret"].startswith("whsec_")
    assert (created["events"], created["description"], created["enabled"]) == (
        ["email.delivered", "email.bounced"],
        "prod",
        True,
    )
    wh_id = created["id"]

    got = (await client.get(f"/v1/webhooks/{wh_id}", headers=bearer(tenant.live))).json()
    assert "secret" not in got and got["url"] == "https://hooks.acme.test/mailroom"
    listed = (await client.get("/v1/webhooks", headers=bearer(tenant.live))).json()["data"]
    assert [w["id"] for w in listed] == [wh_id]
    assert (await client.get("/v1/webhooks", headers=bearer(other.live))).json()["data"] == []
    resp = await client.get(f"/v1/webhooks/{wh_id}", headers=bearer(other.live))
    assert (resp.status_code, resp.json()["error"]) == (404, "not_found")

    bad = await client.post("/v1/webhooks", json={"url": "http://x.test", "events": ["*"]}, headers=bearer(tenant.live))
    assert (bad.status_code, bad.json()["error"], bad.json()["param"]) == (422, "validation_error", "url")
    bad = await client.post("/v1/webhooks", json={"url": "https://x.test"}, headers=bearer(tenant.live))
    assert (bad.status_code, bad.json()["param"]) == (422, "events")

    deleted = await client.delete(f"/v1/webhooks/{wh_id}", headers=bearer(tenant.live))
    assert deleted.status_code == 200 and deleted.json() == {"id": wh_id, "deleted": True}
    again = await client.delete(f"/v1/webhooks/{wh_id}", headers=bearer(tenant.live))
    assert again.status_code == 404
    assert responders.endpoints == {}
