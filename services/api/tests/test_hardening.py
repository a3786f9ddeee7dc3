"""Issue 14 regressions, one per defect: bad input never reaches Postgres (NUL, invalid UTF-8, deep
nesting, int4 overflow, malformed ids and query values), the API refuses what the sender would refuse,
the built message's size is checked at accept time, error logs carry no data, and the query string
and OPTIONS say what the routes really take."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import msgspec
import pytest
import structlog
from api_testkit import (
    OPERATOR_TOKEN,
    Tenant,
    add_domain,
    assert_error,
    bearer,
    make_tenant,
    serve,
    table_counts,
    unique_domain,
)
from mailroom_api.app import create_app
from mailroom_contracts.message import MAX_CUSTOM_HEADERS
from mailroom_kit.runtime import Runtime

OP = bearer(OPERATOR_TOKEN)


@dataclasses.dataclass
class Ctx:
    tenant: Tenant
    domain: str


@pytest.fixture(scope="module")
async def ctx(runtime: Runtime) -> Ctx:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    return Ctx(tenant, domain)


def email(ctx: Ctx, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": f"Acme <hi@{ctx.domain}>", "to": ["ann@example.test"], "subject": "Hi", "text": "t"}
    body.update(overrides)
    return body


async def counts(rt: Runtime) -> tuple[int, ...]:
    return await table_counts(rt, "emails", "outbox", "tenants", "api_keys")


# --------------------------------------------------------------------------- defect 1: NUL, UTF-8, depth, int4


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"text": "a\x00b"}, "text"),
        ({"html": "<p>\x00</p>", "text": None}, "html"),
        ({"metadata": {"k\x00": "v"}}, "metadata.k\x00"),
        ({"metadata": {"k": "v\x00"}}, "metadata.k"),
        ({"metadata": {"a": [{"b": ["ok", "x\x00"]}]}}, "metadata.a[0].b[1]"),
        ({"subject": "Hi\x00"}, "subject"),
    ],
)
async def test_nul_in_send_body_is_422_before_the_database(
    overrides: dict[str, Any], param: str, ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    before = await counts(runtime)
    body = {k: v for k, v in email(ctx, **overrides).items() if v is not None}
    resp = await client.post("/v1/emails", json=body, headers=bearer(ctx.tenant.live))
    assert_error(resp, 422, "validation_error", param)
    assert await counts(runtime) == before


async def test_nul_in_key_and_tenant_names(ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient) -> None:
    before = await counts(runtime)
    resp = await client.post("/v1/api-keys", json={"name": "k\x00"}, headers=bearer(ctx.tenant.live))
    assert_error(resp, 422, "validation_error", "name")
    resp = await client.post("/admin/v1/tenants", json={"name": "t\x00"}, headers=OP)
    assert_error(resp, 422, "validation_error", "name")
    resp = await client.patch(f"/admin/v1/tenants/{ctx.tenant.id}", json={"name": "t\x00"}, headers=OP)
    assert_error(resp, 422, "validation_error", "name")
    resp = await client.post(
        f"/admin/v1/tenants/{ctx.tenant.id}/api-keys", json={"name": "x", "domain_id": "dom_\x00"}, headers=OP
    )
    assert_error(resp, 422, "validation_error", "domain_id")
    assert await counts(runtime) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'{"from": "a@b.test", "to": "c@d.test", "subject": "\xff\xfe", "text": "t"}',
        b'{"from": "a@b.test", "to": "c@d.test", "subject": "s", "text": "\xc3"}',
        b'{"from": "a@b.test", "to": "c@d.test", "subject": "s", "text": "\\ud800"}',
        b'{"metadata": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"metadata": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}",
        b'{"metadata": ' + b"[" * 40 + b"]" * 40 + b"}",
    ],
    ids=["invalid-utf8", "truncated-utf8", "lone-surrogate", "deep-10000-arrays", "deep-10000-objects", "deep-40"],
)
async def test_undecodable_or_too_deep_bodies_are_400(
    raw: bytes, ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    before = await counts(runtime)
    for path, token in (("/v1/emails", bearer(ctx.tenant.live)), ("/admin/v1/tenants", OP)):
        resp = await client.post(path, content=raw, headers={**token, "Content-Type": "application/json"})
        assert_error(resp, 400, "invalid_json", None)
    assert await counts(runtime) == before


@pytest.mark.parametrize("field", ["monthly_quota", "rate_limit"])
@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**63, 10**30])
async def test_tenant_limits_fit_int4(
    field: str, value: int, ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    before = await counts(runtime)
    resp = await client.post("/admin/v1/tenants", json={"name": "Big", field: value}, headers=OP)
    assert_error(resp, 422, "validation_error", field)
    resp = await client.patch(f"/admin/v1/tenants/{ctx.tenant.id}", json={field: value}, headers=OP)
    assert_error(resp, 422, "validation_error", field)
    assert await counts(runtime) == before


async def test_largest_int4_limit_is_accepted(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/admin/v1/tenants", json={"name": "Max", "monthly_quota": 2**31 - 1, "rate_limit": 2**31 - 1}, headers=OP
    )
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize(
    ("path", "auth"),
    [
        ("/v1/emails/msg_%00", "live"),
        ("/v1/emails/msg_%00aaaaaaaaaaaaaaaaaaaaaaaaa", "live"),
        ("/v1/emails/dom_00000000000000000000000000", "live"),
        ("/v1/domains/dom_%00", "live"),
        ("/admin/v1/tenants/ten_%00", "op"),
        ("/admin/v1/tenants/%E2%80%A8", "op"),
    ],
)
async def test_malformed_path_ids_are_404(path: str, auth: str, ctx: Ctx, client: httpx.AsyncClient) -> None:
    headers = OP if auth == "op" else bearer(ctx.tenant.live)
    assert_error(await client.get(path, headers=headers), 404, "not_found", None)


async def test_malformed_ids_in_other_methods_are_404(ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient) -> None:
    before = await counts(runtime)
    assert_error(await client.delete("/v1/api-keys/key_%00", headers=bearer(ctx.tenant.live)), 404, "not_found", None)
    resp = await client.patch("/admin/v1/tenants/ten_%00", json={"status": "paused"}, headers=OP)
    assert_error(resp, 404, "not_found", None)
    resp = await client.post("/admin/v1/tenants/ten_%00/api-keys", json={"name": "x"}, headers=OP)
    assert_error(resp, 404, "not_found", None)
    assert await counts(runtime) == before


@pytest.mark.parametrize("param", ["to", "domain", "tag", "cursor", "status", "include"])
async def test_nul_in_query_values_is_422_naming_the_parameter(param: str, ctx: Ctx, client: httpx.AsyncClient) -> None:
    path = f"/v1/emails/{'msg_' + '0' * 26}" if param == "include" else "/v1/emails"
    resp = await client.get(path, params={param: "a\x00:b"}, headers=bearer(ctx.tenant.live))
    assert_error(resp, 422, "validation_error", param)


# --------------------------------------------------------------------------- defect 2: what the sender refuses


@pytest.mark.parametrize("brk", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r", "\n"])
async def test_every_line_boundary_is_refused_in_subject_and_headers(
    brk: str, ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    before = await counts(runtime)
    resp = await client.post("/v1/emails", json=email(ctx, subject=f"a{brk}b"), headers=bearer(ctx.tenant.live))
    assert_error(resp, 422, "validation_error", "subject")
    resp = await client.post(
        "/v1/emails", json=email(ctx, headers={"X-A": f"a{brk}b"}), headers=bearer(ctx.tenant.live)
    )
    assert_error(resp, 422, "validation_error", "headers.X-A")
    resp = await client.post(
        "/v1/emails", json=email(ctx, to=[f"Ann{brk}B <a@example.test>"]), headers=bearer(ctx.tenant.live)
    )
    assert_error(resp, 422, "validation_error", "to[0]")
    assert await counts(runtime) == before


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"to": ["jörg@example.test"]}, "to[0]"),
        ({"from": "jörg@{domain}"}, "from"),
        ({"cc": ["Ann <ännä@example.test>"]}, "cc[0]"),
        ({"to": ["x" * 65 + "@example.test"]}, "to[0]"),
        ({"tags": {"team": "core\n"}}, "tags.team"),
        ({"tags": {"team\n": "core"}}, "tags.team\n"),
        ({"headers": {"X-" + "n" * 75: "x"}}, "headers.X-" + "n" * 75),
        ({"headers": {"Content-ID": "<a@b>"}}, "headers.Content-ID"),
        ({"headers": {"Delivered-To": "a@b.test"}}, "headers.Delivered-To"),
        ({"headers": {f"X-H{i}": "v" for i in range(MAX_CUSTOM_HEADERS + 1)}}, "headers"),
    ],
)
async def test_api_refuses_what_the_sender_refuses(
    overrides: dict[str, Any], param: str, ctx: Ctx, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    before = await counts(runtime)
    if "from" in overrides:
        overrides = {"from": overrides["from"].format(domain=ctx.domain)}
    resp = await client.post("/v1/emails", json=email(ctx, **overrides), headers=bearer(ctx.tenant.live))
    assert_error(resp, 422, "validation_error", param)
    assert await counts(runtime) == before


async def test_what_the_sender_accepts_is_accepted(ctx: Ctx, client: httpx.AsyncClient) -> None:
    body = email(
        ctx,
        to=['"Jörg Müller" <jorg@bücher.example>', "x" * 64 + "@example.test"],
        subject="Grüße 🎉",
        headers={f"X-H{i}": "v" for i in range(MAX_CUSTOM_HEADERS)},
        tags={"team": "core"},
    )
    resp = await client.post("/v1/emails", json=body, headers=bearer(ctx.tenant.live))
    assert resp.status_code == 202, resp.text


# --------------------------------------------------------------------------- defect 3: built message size


async def test_message_over_the_limit_after_encoding_is_413(ctx: Ctx, runtime: Runtime) -> None:
    """An html just under the body limit fits the request, but html + the generated text, encoded, do not."""
    settings = msgspec.structs.replace(runtime.settings, max_message_bytes=200_000, max_body_bytes=1_000_000)
    small = dataclasses.replace(runtime, settings=settings)
    before = await counts(runtime)
    async with serve(create_app(small)) as client:
        html = "<p>" + "é" * 60_000 + "</p>"  # 120 kB of UTF-8; with its text, base64: ~330 kB
        resp = await client.post("/v1/emails", json=email(ctx, html=html, text=None), headers=bearer(ctx.tenant.live))
        assert_error(resp, 413, "payload_too_large", None)
        assert "message" in resp.json()["message"]
        ok = await client.post(
            "/v1/emails",
            json=email(ctx, html="<p>" + "e" * 60_000 + "</p>", text=None),
            headers=bearer(ctx.tenant.live),
        )
        assert ok.status_code == 202, ok.text
    assert (await counts(runtime))[0] == before[0] + 1


# --------------------------------------------------------------------------- defect 9: no data in error logs


async def test_unhandled_database_error_logs_no_data(
    ctx: Ctx, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error whose message and context echo a value is logged by class and a bounded,
    sanitised message only: the marker never reaches the log."""
    from mailroom_api.emails import repository

    marker = "SECRET-MARKER-7f3a"

    async def broken_accept(conn: Any, *args: Any, **kwargs: Any) -> None:
        # A real Postgres error that echoes the value in its message and CONTEXT.
        await conn.execute(
            f"DO $$ BEGIN RAISE EXCEPTION 'bad value {marker}' USING DETAIL = '{marker}', HINT = '{marker}'; END $$"
        )

    monkeypatch.setattr(repository, "accept_email", broken_accept)
    monkeypatch.setattr(repository, "accept_grouped", broken_accept)  # a plain send's statement (issue 15)
    async with serve(create_app(runtime)) as client:
        with structlog.testing.capture_logs() as logs:
            resp = await client.post(
                "/v1/emails", json=email(ctx, metadata={"m": marker}), headers=bearer(ctx.tenant.live)
            )
    assert_error(resp, 500, "internal", None)
    assert marker not in resp.text
    errors = [e for e in logs if e.get("event") == "http.unhandled_error"]
    assert errors and errors[0]["error_class"].endswith("RaiseException")
    assert marker not in repr(logs)
    assert all("exc_info" not in e for e in errors)  # a rendered traceback would carry the message again


# --------------------------------------------------------------------------- defect 11: query strings, OPTIONS


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("created_before=0.5", "created_before"),
        ("created_after=1700000000", "created_after"),
        ("created_after=2024-01-01", "created_after"),
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=1.5", "limit"),
        ("status=nope", "status"),
        ("colour=red", "colour"),
        ("limit=5&limit=6", "limit"),
    ],
)
async def test_malformed_and_unknown_query_parameters_are_422(
    query: str, param: str, ctx: Ctx, client: httpx.AsyncClient
) -> None:
    resp = await client.get(f"/v1/emails?{query}", headers=bearer(ctx.tenant.live))
    assert_error(resp, 422, "validation_error", param)


async def test_unknown_query_parameter_on_routes_without_any(ctx: Ctx, client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/api-keys?x=1", headers=bearer(ctx.tenant.live)), 422, "validation_error", "x")
    assert_error(await client.get("/admin/v1/tenants?x=1", headers=OP), 422, "validation_error", "x")


async def test_rfc3339_query_timestamps_are_accepted(ctx: Ctx, client: httpx.AsyncClient) -> None:
    resp = await client.get(
        "/v1/emails",
        params={"created_after": "2024-01-01T00:00:00Z", "created_before": "2999-01-01T00:00:00+02:00"},
        headers=bearer(ctx.tenant.live),
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/emails", {"GET", "POST", "OPTIONS"}),
        ("/admin/v1/tenants/ten_00000000000000000000000000", {"GET", "PATCH", "OPTIONS"}),
        ("/v1/api-keys/key_00000000000000000000000000", {"DELETE", "OPTIONS"}),
        ("/v1/api-keys", {"GET", "POST", "OPTIONS"}),
    ],
)
async def test_options_lists_every_method_of_the_path(path: str, methods: set[str], client: httpx.AsyncClient) -> None:
    resp = await client.options(path)
    assert resp.status_code == 204, resp.text
    assert {m.strip() for m in resp.headers["allow"].split(",")} == methods
    assert resp.headers.get("x-request-id", "").startswith("req_")


async def test_openapi_describes_the_real_constraints(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def prop(schema: str, field: str) -> dict[str, Any]:
        p = schemas[schema]["properties"][field]
        # optional fields are `oneOf: [<schema>, null]` with the constraints beside the oneOf
        inner = next((s for s in p.get("oneOf", [p]) if s.get("type") != "null"), p)
        return {**inner, **{k: v for k, v in p.items() if k != "oneOf"}}

    # (Litestar 2.x drops a bound whose value is 0; the app puts `minimum: 0` back from msgspec's schema.)
    assert prop("CreateTenant", "monthly_quota")["maximum"] == 2**31 - 1
    assert prop("CreateTenant", "monthly_quota")["minimum"] == 0
    assert prop("UpdateTenant", "monthly_quota")["minimum"] == 0
    assert prop("CreateTenant", "rate_limit")["minimum"] == 1
    assert prop("CreateTenant", "name")["maxLength"] == 200
    assert prop("CreateTenant", "name")["minLength"] == 1
    assert prop("CreateApiKey", "name")["maxLength"] == 200
    assert "pattern" in prop("CreateApiKey", "domain_id")
    assert prop("SendEmail", "subject")["maxLength"] == 998
    params = {p["name"]: p for p in doc["paths"]["/v1/emails"]["get"]["parameters"]}
    assert params["created_after"]["schema"]["pattern"].startswith("^\\d{4}-")
    assert params["limit"]["schema"]["maximum"] == 100 and params["limit"]["schema"]["minimum"] == 1
    assert set(params["status"]["schema"]["enum"]) >= {"queued", "sent", "delivered", "bounced"}
    assert params["created_after"]["schema"]["format"] == "date-time"
    email_id = next(p for p in doc["paths"]["/v1/emails/{email_id}"]["get"]["parameters"] if p["name"] == "email_id")
    assert email_id["schema"]["pattern"] == "^msg_[0-9a-z]{26}$"
