"""Issue 14 defect 4: the API maps a request/reply error by its class (`RpcError.kind`) first, so
bad input answered by the webhooks service is a 4xx (never a 503 that clients retry for ever) and a
responder's crash is a 500 that says nothing. Replies without a class still map by code. Against a
real NATS responder served by the kit (`rpc.serve`, as the webhooks service does)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from api_testkit import bearer, make_tenant
from mailroom_contracts import subjects
from mailroom_contracts.rpc import (
    CreateWebhookReply,
    CreateWebhookRequest,
    GetWebhookRequest,
    RpcError,
    WebhookReply,
)
from mailroom_kit import rpc
from mailroom_kit.runtime import Runtime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def webhook_id() -> str:
    return "wh_" + "".join(secrets.choice(_ALPHABET) for _ in range(26))


class Scripted:
    """Answers each request with the error scripted for its webhook id (or description), or crashes."""

    def __init__(self) -> None:
        self.errors: dict[str, RpcError | None] = {}
        self.asked: list[str] = []

    async def get(self, req: GetWebhookRequest) -> WebhookReply:
        self.asked.append(req.webhook_id)
        error = self.errors[req.webhook_id]
        if error is None:
            raise RuntimeError(f"internal detail: relation webhooks.endpoints, tenant {req.tenant_id}")
        return WebhookReply(error=error)

    async def create(self, req: CreateWebhookRequest) -> CreateWebhookReply:
        # What the webhooks service answers to a NUL in the description since issue 14.
        assert req.description is not None and "\x00" in req.description
        return CreateWebhookReply(
            error=RpcError(
                code="validation_error",
                message="description must not contain control characters (NUL, ...)",
                param="description",
                kind="validation",
            )
        )


@pytest.fixture
async def scripted(runtime: Runtime) -> AsyncIterator[Scripted]:
    script = Scripted()
    subs = [
        await rpc.serve(runtime.nc, subjects.RPC_WEBHOOKS_GET, GetWebhookRequest, script.get, queue="wh"),
        await rpc.serve(runtime.nc, subjects.RPC_WEBHOOKS_CREATE, CreateWebhookRequest, script.create, queue="wh"),
    ]
    await runtime.nc.flush()
    yield script
    for sub in subs:
        await sub.unsubscribe()


@pytest.mark.parametrize(
    ("error", "status", "code", "param"),
    [
        # By class.
        (RpcError(code="validation_error", message="bad", param="x", kind="validation"), 422, "validation_error", "x"),
        (RpcError(code="weird_code", message="bad", param="x", kind="validation"), 422, "validation_error", "x"),
        (RpcError(code="not_found", message="webhook not found", kind="not_found"), 404, "not_found", None),
        (RpcError(code="conflict", message="taken", kind="conflict"), 409, "conflict", None),
        (RpcError(code="tenant_paused", message="paused", kind="forbidden"), 403, "tenant_paused", None),
        (RpcError(code="nope", message="no", kind="forbidden"), 403, "insufficient_permission", None),
        (RpcError(code="unavailable", message="storage down", kind="transient"), 503, "unavailable", None),
        (RpcError(code="something", message="storage down", kind="transient"), 503, "unavailable", None),
        (RpcError(code="not_found", message="secret internals", kind="internal"), 500, "internal", None),
        # No class (an older responder) or one this version does not know: by code, as before.
        (RpcError(code="not_found", message="webhook not found"), 404, "not_found", None),
        (RpcError(code="validation_error", message="bad", param="url"), 422, "validation_error", "url"),
        (RpcError(code="conflict", message="taken", kind="from_the_future"), 409, "conflict", None),
        (RpcError(code="internal", message="internal error"), 503, "unavailable", None),
        (RpcError(code="unavailable", message="down"), 503, "unavailable", None),
    ],
)
async def test_reply_error_maps_by_class_then_by_code(
    error: RpcError,
    status: int,
    code: str,
    param: str | None,
    scripted: Scripted,
    client: httpx.AsyncClient,
    runtime: Runtime,
) -> None:
    tenant = await make_tenant(runtime)
    wh = webhook_id()
    scripted.errors[wh] = error
    resp = await client.get(f"/v1/webhooks/{wh}", headers=bearer(tenant.live))
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert (body["error"], body["param"]) == (code, param)
    assert resp.headers.get("x-request-id") == body["request_id"]
    if status == 503:
        assert resp.headers.get("retry-after")
    if status == 500:
        assert body["message"] == "internal error" and "retry-after" not in resp.headers


async def test_a_responder_crash_is_500_internal_without_details(
    scripted: Scripted, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The kit answers `internal`/`internal` for an exception the handler let escape; before
    issue 14 the API turned that into 503 `unavailable`, so clients retried a bug for ever."""
    tenant = await make_tenant(runtime)
    wh = webhook_id()
    scripted.errors[wh] = None
    resp = await client.get(f"/v1/webhooks/{wh}", headers=bearer(tenant.live))
    assert resp.status_code == 500, resp.text
    assert resp.json()["error"] == "internal" and resp.json()["message"] == "internal error"
    assert "detail" not in resp.text and tenant.id not in resp.text and "retry-after" not in resp.headers


@pytest.mark.parametrize("path_id", ["wh_%00", "wh_", "wh_" + "0" * 25 + "%00", "WH_" + "0" * 26, "x" * 300])
async def test_a_malformed_webhook_id_is_404_without_asking(
    path_id: str, scripted: Scripted, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    for method in ("GET", "DELETE"):
        resp = await client.request(method, f"/v1/webhooks/{path_id}", headers=bearer(tenant.live))
        assert (resp.status_code, resp.json()["error"]) == (404, "not_found"), resp.text
    assert scripted.asked == []


async def test_nul_in_description_is_422_naming_it(
    scripted: Scripted, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    resp = await client.post(
        "/v1/webhooks",
        json={"url": "https://hooks.acme.test/", "events": ["*"], "description": "prod\u0000"},
        headers=bearer(tenant.live),
    )
    assert resp.status_code == 422, resp.text
    assert (resp.json()["error"], resp.json()["param"]) == ("validation_error", "description")
