"""The bad-input suite: every rejected request gets the SPEC error code, status and param, an
X-Request-Id, and leaves no email row and no outbox row behind."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from api_testkit import Tenant, add_domain, assert_error, bearer, make_tenant, serve, table_counts, unique_domain
from mailroom_api.app import create_app
from mailroom_api.keys import service as keys
from mailroom_api.keys.schemas import CreateApiKey
from mailroom_api.tenants import service as tenants
from mailroom_api.tenants.schemas import UpdateTenant
from mailroom_contracts.headers import RESERVED_HEADER_PREFIXES, RESERVED_HEADERS
from mailroom_kit.runtime import Runtime


@dataclass
class World:
    tenant: Tenant
    verified: str
    pending: str
    revoked: str
    restricted: str  # live key restricted to `verified`
    other_domain: str  # verified domain of the same tenant the restricted key may not use
    paused: Tenant
    other_email: str  # an email id of another tenant


@pytest.fixture(scope="module")
async def world(runtime: Runtime, client: httpx.AsyncClient) -> World:
    tenant = await make_tenant(runtime)
    verified, pending, other_domain = unique_domain(), unique_domain(), unique_domain()
    verified_id = await add_domain(runtime, tenant.id, verified)
    await add_domain(runtime, tenant.id, pending, status="pending")
    await add_domain(runtime, tenant.id, other_domain)
    async with runtime.pool.connection() as conn, conn.transaction():
        revoked = await keys.create_api_key(conn, tenant.id, CreateApiKey(name="old"))
        await keys.revoke_api_key(conn, tenant.id, revoked.id)
        restricted = await keys.create_api_key(conn, tenant.id, CreateApiKey(name="one-domain", domain_id=verified_id))
    paused = await make_tenant(runtime, "Paused")
    paused_domain = unique_domain()
    await add_domain(runtime, paused.id, paused_domain)
    async with runtime.pool.connection() as conn, conn.transaction():
        await tenants.update_tenant(conn, paused.id, UpdateTenant(status="paused"))
    other = await make_tenant(runtime, "Other")
    other_dom = unique_domain()
    await add_domain(runtime, other.id, other_dom)
    resp = await client.post("/v1/emails", json=email(f"x@{other_dom}"), headers=bearer(other.live))
    assert resp.status_code == 202, resp.text
    return World(
        tenant=tenant,
        verified=verified,
        pending=pending,
        revoked=revoked.token,
        restricted=restricted.token,
        other_domain=other_domain,
        paused=paused,
        other_email=resp.json()["id"],
    )


def email(sender: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "from": sender,
        "to": ["Ann <ann@example.test>"],
        "subject": "Hello",
        "text": "hi",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def snapshot_counts(rt: Runtime) -> tuple[int, ...]:
    return await table_counts(rt, "emails", "outbox", "email_events", "email_recipients")


# (case id, key attribute on World/Tenant, raw body or JSON body builder, content type, status, code, param)
def _json_cases(w: World) -> list[tuple[str, str, Any, int, str, str | None]]:
    ok = f"Acme <hello@{w.verified}>"
    many = [f"r{i}@example.test" for i in range(30)]
    return [
        ("missing to", w.tenant.live, email(ok, to=None), 422, "validation_error", "to"),
        (
            "missing from",
            w.tenant.live,
            {"to": "a@example.test", "subject": "s", "text": "t"},
            422,
            "validation_error",
            "from",
        ),
        ("missing subject", w.tenant.live, email(ok, subject=None), 422, "validation_error", "subject"),
        ("empty subject", w.tenant.live, email(ok, subject="  "), 422, "validation_error", "subject"),
        ("no body", w.tenant.live, email(ok, text=None), 422, "validation_error", "html"),
        (
            "bad to[1]",
            w.tenant.live,
            email(ok, to=["a@example.test", "not-an-address"]),
            422,
            "validation_error",
            "to[1]",
        ),
        (
            "wrong type to[2]",
            w.tenant.live,
            email(ok, to=["a@example.test", "b@example.test", 7]),
            422,
            "validation_error",
            "to[2]",
        ),
        ("to not a list", w.tenant.live, email(ok, to=42), 422, "validation_error", "to"),
        ("bad from", w.tenant.live, email("Acme <nope>"), 422, "validation_error", "from"),
        ("bad cc[0]", w.tenant.live, email(ok, cc=["x@@y"]), 422, "validation_error", "cc[0]"),
        ("bad reply_to", w.tenant.live, email(ok, reply_to="nope"), 422, "validation_error", "reply_to"),
        (
            "header injection in address",
            w.tenant.live,
            email(ok, to=["a@example.test\r\nBcc: x@evil.test"]),
            422,
            "validation_error",
            "to[0]",
        ),
        (
            "51 recipients",
            w.tenant.live,
            email(ok, to=many, cc=many[:11], bcc=many[:10]),
            422,
            "validation_error",
            "to",
        ),
        (
            "CRLF in subject",
            w.tenant.live,
            email(ok, subject="Hi\r\nBcc: x@evil.test"),
            422,
            "validation_error",
            "subject",
        ),
        ("LF in subject", w.tenant.live, email(ok, subject="Hi\nthere"), 422, "validation_error", "subject"),
        ("long subject", w.tenant.live, email(ok, subject="x" * 999), 422, "validation_error", "subject"),
        (
            "reserved header",
            w.tenant.live,
            email(ok, headers={"From": "boss@bank.test"}),
            422,
            "validation_error",
            "headers.From",
        ),
        (
            "reserved header any case",
            w.tenant.live,
            email(ok, headers={"dkim-signature": "v=1"}),
            422,
            "validation_error",
            "headers.dkim-signature",
        ),
        (
            "CRLF in header value",
            w.tenant.live,
            email(ok, headers={"X-Foo": "a\r\nBcc: x@evil.test"}),
            422,
            "validation_error",
            "headers.X-Foo",
        ),
        (
            "NUL in header value",
            w.tenant.live,
            email(ok, headers={"X-Foo": "a\x00b"}),
            422,
            "validation_error",
            "headers.X-Foo",
        ),
        (
            "bad header name",
            w.tenant.live,
            email(ok, headers={"X Foo": "a"}),
            422,
            "validation_error",
            "headers.X Foo",
        ),
        (
            "header value not string",
            w.tenant.live,
            email(ok, headers={"X-Num": 5}),
            422,
            "validation_error",
            "headers.X-Num",
        ),
        ("unknown field", w.tenant.live, email(ok, attachmentz=[]), 422, "validation_error", "attachmentz"),
        ("template without id", w.tenant.live, email(ok, template={}), 422, "validation_error", "template.id"),
        (
            "too many tags",
            w.tenant.live,
            email(ok, tags={f"k{i}": "v" for i in range(11)}),
            422,
            "validation_error",
            "tags",
        ),
        (
            "bad tag value",
            w.tenant.live,
            email(ok, tags={"team": "a b"}),
            422,
            "validation_error",
            "tags.team",
        ),
        ("bad tag key", w.tenant.live, email(ok, tags={"té": "x"}), 422, "validation_error", "tags.té"),
        (
            "reserved tag",
            w.tenant.live,
            email(ok, tags={"mailroom_email_id": "x"}),
            422,
            "validation_error",
            "tags.mailroom_email_id",
        ),
        (
            "metadata too big",
            w.tenant.live,
            email(ok, metadata={"blob": "x" * 5000}),
            422,
            "validation_error",
            "metadata",
        ),
        ("metadata not object", w.tenant.live, email(ok, metadata=[1]), 422, "validation_error", "metadata"),
        ("revoked key", w.revoked, email(ok), 403, "api_key_revoked", None),
        ("unknown key", "mr_live_" + "A" * 43, email(ok), 401, "invalid_api_key", None),
        ("garbage key", "hunter2", email(ok), 401, "invalid_api_key", None),
        ("unverified domain", w.tenant.live, email(f"hi@{w.pending}"), 403, "domain_not_verified", None),
        ("unknown domain", w.tenant.live, email("hi@unknown-domain.test"), 403, "domain_not_verified", None),
        (
            "key's other domain",
            w.restricted,
            email(f"hi@{w.other_domain}"),
            403,
            "from_domain_not_allowed",
            None,
        ),
        ("paused tenant", w.paused.live, email(ok), 403, "tenant_paused", None),
    ]


CASE_IDS = [c[0] for c in _json_cases(World(Tenant("", "", "", ""), "", "", "", "", "", Tenant("", "", "", ""), ""))]


@pytest.mark.parametrize("case", CASE_IDS)
async def test_rejected_send_leaves_nothing_behind(
    case: str, world: World, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    _, token, body, status, code, param = next(c for c in _json_cases(world) if c[0] == case)
    before = await snapshot_counts(runtime)
    resp = await client.post("/v1/emails", json=body, headers=bearer(token))
    assert_error(resp, status, code, param)
    assert await snapshot_counts(runtime) == before


RAW_CASES = [
    ("malformed JSON", b'{"from": "a@b.test", "to": ', "application/json", 400, "invalid_json"),
    ("not an object", b'["a@b.test"]', "application/json", 400, "invalid_json"),
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("wrong content type", b'{"from": "a@b.test"}', "text/plain", 400, "invalid_json"),
    ("form body", b"from=a%40b.test&to=c%40d.test", "application/x-www-form-urlencoded", 400, "invalid_json"),
]


@pytest.mark.parametrize(("case", "raw", "ctype", "status", "code"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
async def test_undecodable_bodies(
    case: str,
    raw: bytes,
    ctype: str,
    status: int,
    code: str,
    world: World,
    runtime: Runtime,
    client: httpx.AsyncClient,
) -> None:
    before = await snapshot_counts(runtime)
    resp = await client.post("/v1/emails", content=raw, headers={**bearer(world.tenant.live), "Content-Type": ctype})
    assert_error(resp, status, code, None)
    assert await snapshot_counts(runtime) == before


async def test_missing_key(world: World, runtime: Runtime, client: httpx.AsyncClient) -> None:
    before = await snapshot_counts(runtime)
    resp = await client.post("/v1/emails", json=email(f"hi@{world.verified}"))
    assert_error(resp, 401, "missing_api_key", None)
    resp = await client.post("/v1/emails", json=email(f"hi@{world.verified}"), headers={"Authorization": "Basic x"})
    assert_error(resp, 401, "missing_api_key", None)
    assert await snapshot_counts(runtime) == before


async def test_authentication_comes_before_body_validation(world: World, client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/emails", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(resp, 401, "missing_api_key", None)


async def test_insufficient_permission(world: World, client: httpx.AsyncClient) -> None:
    for method, path in (
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/api-keys"),
        ("GET", "/v1/domains"),
        ("POST", "/v1/domains"),
        ("GET", "/v1/webhooks"),
        ("DELETE", "/v1/api-keys/key_x"),
    ):
        resp = await client.request(method, path, json={"name": "x"}, headers=bearer(world.tenant.sending))
        assert_error(resp, 403, "insufficient_permission", None)


async def test_sending_key_may_send_and_read(world: World, client: httpx.AsyncClient) -> None:
    resp = await client.post("/v1/emails", json=email(f"hi@{world.verified}"), headers=bearer(world.tenant.sending))
    assert resp.status_code == 202, resp.text
    got = await client.get(f"/v1/emails/{resp.json()['id']}", headers=bearer(world.tenant.sending))
    assert got.status_code == 200
    assert (await client.get("/v1/emails", headers=bearer(world.tenant.sending))).status_code == 200


async def test_other_tenants_email_is_not_found(world: World, client: httpx.AsyncClient) -> None:
    resp = await client.get(f"/v1/emails/{world.other_email}", headers=bearer(world.tenant.live))
    assert_error(resp, 404, "not_found", None)
    resp = await client.get("/v1/emails/msg_doesnotexist", headers=bearer(world.tenant.live))
    assert_error(resp, 404, "not_found", None)


async def test_litestar_errors_use_the_same_shape(world: World, client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, "not_found", None)
    resp = await client.put("/v1/emails", json={}, headers=bearer(world.tenant.live))
    assert_error(resp, 405, "method_not_allowed", None)
    resp = await client.get("/v1/emails?limit=500", headers=bearer(world.tenant.live))
    assert_error(resp, 422, "validation_error", "limit")
    resp = await client.get("/v1/emails?created_after=yesterday", headers=bearer(world.tenant.live))
    assert_error(resp, 422, "validation_error", "created_after")


async def test_oversize_body_is_413(world: World, runtime: Runtime) -> None:
    small = dataclasses.replace(runtime, settings=msgspec.structs.replace(runtime.settings, max_body_bytes=2048))
    before = await snapshot_counts(runtime)
    async with serve(create_app(small)) as client:
        resp = await client.post(
            "/v1/emails",
            json=email(f"hi@{world.verified}", html="x" * 5000),
            headers=bearer(world.tenant.live),
        )
        assert_error(resp, 413, "payload_too_large", None)
        ok = await client.post("/v1/emails", json=email(f"hi@{world.verified}"), headers=bearer(world.tenant.live))
        assert ok.status_code == 202
    after = await snapshot_counts(runtime)
    assert after[0] == before[0] + 1


async def test_database_down_is_503_without_internals(world: World, runtime: Runtime, api_database_url: str) -> None:
    from mailroom_kit.db import open_pool

    pool = await open_pool(api_database_url, "api")
    await pool.close()
    broken = dataclasses.replace(runtime, pool=pool)
    async with serve(create_app(broken)) as client:
        resp = await client.post("/v1/emails", json=email(f"hi@{world.verified}"), headers=bearer(world.tenant.live))
    assert_error(resp, 503, "unavailable", None)
    assert resp.headers.get("retry-after")
    assert "pool" not in resp.json()["message"].lower()


async def test_an_unknown_template_is_not_found(world: World, client: httpx.AsyncClient) -> None:
    body = {"from": "a@b.test", "to": "c@d.test", "subject": "s", "text": "t", "template": {"id": "tpl_x"}}
    resp = await client.post("/v1/emails", json=body, headers=bearer(world.tenant.live))
    assert resp.status_code == 404 and resp.json()["param"] == "template.id"


# Every name the contracts reserve, as given and in another case, plus members of the reserved families
# (the ones that used to slip through the API and fail the email in the sender).
RESERVED_NAMES = sorted(
    {
        *(h for name in RESERVED_HEADERS for h in (name, name.upper())),
        *(f"{prefix}Anything" for prefix in RESERVED_HEADER_PREFIXES),
        "Content-ID",
        "Delivered-To",
        "X-SES-MESSAGE-TAGS",
    }
)


@pytest.mark.parametrize("name", RESERVED_NAMES)
async def test_every_reserved_header_is_refused_before_acceptance(
    name: str, world: World, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """The API refuses exactly what the sender would refuse (one rule, in contracts), so a reserved
    header is a 422 naming it, never a 202 followed by a failed email."""
    before = await snapshot_counts(runtime)
    body = email(f"hi@{world.verified}", headers={name: "value"})
    resp = await client.post("/v1/emails", json=body, headers=bearer(world.tenant.live))
    assert_error(resp, 422, "validation_error", f"headers.{name}")
    assert await snapshot_counts(runtime) == before


# What a single send refuses about the email itself is, in a batch, that item's error (the same code
# and param); what is about the caller (authentication, the tenant's status) refuses the whole batch.
ITEM_ERRORS = {"validation_error", "payload_too_large", "domain_not_verified", "from_domain_not_allowed"}


@pytest.mark.parametrize("case", CASE_IDS)
async def test_a_batch_item_is_refused_as_a_single_send_is(
    case: str, world: World, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    _, token, body, status, code, param = next(c for c in _json_cases(world) if c[0] == case)
    good = email(f"Acme <hello@{world.verified}>")
    before = await snapshot_counts(runtime)
    resp = await client.post("/v1/emails/batch", json={"emails": [body, good]}, headers=bearer(token))
    if "\\u0000" in msgspec.json.encode(body).decode():
        # NUL is refused in the body as a whole, before any item is looked at: the absolute path.
        assert_error(resp, 422, "validation_error", f"emails[0].{param}")
        assert await snapshot_counts(runtime) == before
    elif code in ITEM_ERRORS:
        assert resp.status_code == 200, resp.text
        refused, accepted = resp.json()["data"]
        assert (refused["index"], refused["error"], refused["param"]) == (0, code, param)
        assert accepted["status"] == "queued" and resp.json()["queued"] == 1
        # The good item only (one row in each table: one recipient), nothing of the refused one.
        assert await snapshot_counts(runtime) == tuple(n + 1 for n in before)
    else:
        assert_error(resp, status, code, param)
        assert await snapshot_counts(runtime) == before
