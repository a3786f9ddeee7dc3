"""OpenAPI 3.1 at /schema/openapi.json describes every endpoint; health, readiness, metrics."""

from __future__ import annotations

import asyncio
import json

import httpx
from litestar import Litestar
from mailroom_api.app import create_app
from mailroom_kit.runtime import Runtime

EXPECTED = {
    ("/admin/v1/tenants", "post"),
    ("/admin/v1/tenants", "get"),
    ("/admin/v1/sending", "get"),
    ("/admin/v1/tenants/{tenant_id}", "get"),
    ("/admin/v1/tenants/{tenant_id}", "patch"),
    ("/admin/v1/tenants/{tenant_id}/api-keys", "post"),
    ("/v1/api-keys", "post"),
    ("/v1/api-keys", "get"),
    ("/v1/api-keys/{key_id}", "delete"),
    ("/v1/emails", "post"),
    ("/v1/emails", "get"),
    ("/v1/emails/batch", "post"),
    ("/v1/emails/{email_id}", "get"),
    ("/v1/emails/{email_id}", "patch"),
    ("/v1/emails/{email_id}/cancel", "post"),
    ("/v1/domains", "post"),
    ("/v1/domains", "get"),
    ("/v1/domains/{domain_id}", "get"),
    ("/v1/domains/{domain_id}", "patch"),
    ("/v1/domains/{domain_id}", "delete"),
    ("/v1/domains/{domain_id}/verify", "post"),
    ("/v1/webhooks", "post"),
    ("/v1/webhooks", "get"),
    ("/v1/webhooks/{webhook_id}", "get"),
    ("/v1/webhooks/{webhook_id}", "delete"),
    ("/v1/webhooks/{webhook_id}", "patch"),
    ("/v1/webhooks/{webhook_id}/rotate-secret", "post"),
    ("/v1/webhooks/{webhook_id}/test", "post"),
    ("/v1/webhooks/{webhook_id}/deliveries", "get"),
    ("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}", "get"),
    ("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", "post"),
    ("/v1/settings", "get"),
    ("/v1/settings", "patch"),
    ("/v1/unsubscribe/{token}", "get"),  # no API key: the signed token is the authority
    ("/v1/unsubscribe/{token}", "post"),
    ("/v1/suppressions", "get"),
    ("/v1/suppressions", "post"),
    ("/v1/usage", "get"),  # issue 23
    ("/v1/stats", "get"),  # issue 22
    ("/v1/suppressions/{email}", "delete"),
    ("/v1/templates", "post"),
    ("/v1/templates", "get"),
    ("/v1/templates/{template}", "get"),
    ("/v1/templates/{template}", "delete"),
    ("/v1/templates/{template}/versions", "post"),
    ("/v1/templates/{template}/publish", "post"),
    ("/v1/templates/{template}/render", "post"),
}

# Actions that take no body (SPEC: `POST /v1/emails/{id}/cancel`).
BODYLESS = {
    ("/resend/webhooks/{webhook_id}/signing-secret/rotate", "post"),
    ("/resend/templates/{template}/publish", "post"),
    ("/resend/templates/{template}/duplicate", "post"),
    ("/v1/emails/{email_id}/cancel", "post"),
    ("/v1/domains/{domain_id}/verify", "post"),
    ("/v1/webhooks/{webhook_id}/rotate-secret", "post"),
    ("/v1/webhooks/{webhook_id}/test", "post"),
    ("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", "post"),
}


def app_routes(app: Litestar) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        path = route.path_format
        if path.startswith("/schema") or path in ("/health", "/ready", "/metrics"):
            continue
        if path.startswith("/resend"):  # Resend's shapes and errors: test_resend_openapi.py
            continue
        for method in getattr(route, "methods", ()):
            if method not in ("OPTIONS", "HEAD"):
                out.add((path, method.lower()))
    return out


async def test_openapi_lists_every_route(client: httpx.AsyncClient, runtime: Runtime) -> None:
    resp = await client.get("/schema/openapi.json")
    assert resp.status_code == 200 and resp.headers["x-request-id"].startswith("req_")
    doc = resp.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert app_routes(create_app(runtime)) == EXPECTED
    assert EXPECTED <= documented
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == "bearer" and schemes["OperatorToken"]["scheme"] == "bearer"
    for path, method in EXPECTED:
        op = doc["paths"][path][method]
        if path.startswith("/v1/unsubscribe/"):
            assert not op.get("security"), (path, method)
            continue
        expected_scheme = "OperatorToken" if path.startswith("/admin") else "ApiKey"
        assert op["security"] == [{expected_scheme: []}], (path, method)
        assert any(code.startswith("2") for code in op["responses"]), (path, method)
        errors = [c for c in op["responses"] if c.startswith(("4", "5"))]
        assert "401" in errors, (path, method)
        for code in errors:
            ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
            # /resend routes answer Resend's error shape (mailroom_api.resend.responses).
            assert ref.endswith("/ResendErrorBody" if path.startswith("/resend/") else "/ErrorBody"), (path, code)
        if method in ("post", "patch") and (path, method) not in BODYLESS:
            assert "requestBody" in op, (path, method)
    send = doc["paths"]["/v1/emails"]["post"]
    assert "202" in send["responses"] and "422" in send["responses"]
    body_ref = send["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    props = doc["components"]["schemas"][body_ref]["properties"]
    assert {
        "from",
        "to",
        "cc",
        "bcc",
        "reply_to",
        "subject",
        "html",
        "text",
        "headers",
        "tags",
        "metadata",
        "template",
    } <= set(props)
    assert set(doc["components"]["schemas"]["ErrorBody"]["properties"]) == {
        "error",
        "message",
        "param",
        "request_id",
    }


async def test_health_ready_metrics(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["x-request-id"].startswith("req_")
    ready = await client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"nats": True, "postgres": True, "migrations": True}
    await client.get("/v1/emails")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "mailroom_http_requests_total" in metrics.text


async def test_a_malformed_http_request_gets_the_spec_error_body(client: httpx.AsyncClient) -> None:
    """The server's own 400 (before the app sees the request) is the SPEC body with a request id."""
    url = httpx.URL(str(client.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(b"POST /v1/emails HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    error = json.loads(body)
    assert (error["error"], error["param"]) == ("invalid_json", None)
    assert f"x-request-id: {error['request_id']}".encode() in head
