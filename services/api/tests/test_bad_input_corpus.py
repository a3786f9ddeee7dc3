"""The bad-input corpus: every field of every JSON body of the tenant and operator API, each with {NUL,
invalid UTF-8, line breaks, over-long, deep nesting, huge arrays, wrong types, integer overflow}
→ a SPEC error (400 `invalid_json`, 413 `payload_too_large` or 422 `validation_error` naming the
field), never a 5xx, and no row, outbox row or event created.

Domain and webhook bodies are forwarded to their services once they pass the API's own checks, so
for those only the mutations the API itself must refuse are sent (nothing reaches NATS)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from api_testkit import OPERATOR_TOKEN, Tenant, add_domain, bearer, make_tenant, table_counts, unique_domain
from mailroom_kit.runtime import Runtime

OP = bearer(OPERATOR_TOKEN)
BREAKS = ["\r\n", "\n", "\r", "\v", "\f", "\x1c", "\x85", "\u2028", "\u2029"]
MARK = "\ue000"  # stands for the bad bytes of the invalid-UTF-8 case; replaced after encoding


@dataclass(frozen=True)
class Body:
    name: str
    method: str
    path: str  # {tenant} is replaced by the tenant id
    auth: str  # "live" or "op"
    valid: dict[str, Any]
    # field → kind: str (a header-like string), text (multi-line allowed), addr, addrs, enum, int, bool, map, list
    fields: dict[str, str]
    forwarded: bool = False  # goes on to another service when valid


BODIES = [
    Body(
        "send",
        "POST",
        "/v1/emails",
        "live",
        {"from": "hi@{domain}", "to": ["a@example.test"], "subject": "s", "text": "t"},
        {
            "from": "addr",
            "to": "addrs",
            "cc": "addrs",
            "bcc": "addrs",
            "reply_to": "addrs",
            "subject": "str",
            "html": "text",
            "text": "text",
            "headers": "map",
            "tags": "map",
            "metadata": "json",
            "stream": "enum",
            "track_opens": "bool",
            "track_clicks": "bool",
        },
    ),
    Body("settings", "PATCH", "/v1/settings", "live", {}, {"default_from": "addr"}),
    Body(
        "api-key",
        "POST",
        "/v1/api-keys",
        "live",
        {"name": "k"},
        {"name": "str", "mode": "enum", "permission": "enum", "domain_id": "id"},
    ),
    Body(
        "operator-api-key",
        "POST",
        "/admin/v1/tenants/{tenant}/api-keys",
        "op",
        {"name": "k"},
        {"name": "str", "mode": "enum", "permission": "enum", "domain_id": "id"},
    ),
    Body(
        "tenant",
        "POST",
        "/admin/v1/tenants",
        "op",
        {"name": "t"},
        {"name": "str", "monthly_quota": "int", "rate_limit": "int"},
    ),
    Body(
        "tenant-update",
        "PATCH",
        "/admin/v1/tenants/{tenant}",
        "op",
        {},
        {"name": "str", "status": "enum", "monthly_quota": "int", "rate_limit": "int"},
    ),
    Body(
        "domain",
        "POST",
        "/v1/domains",
        "live",
        {"name": "x.example.test"},
        {"name": "str", "mail_from_subdomain": "str", "track_opens": "bool", "track_clicks": "bool"},
        forwarded=True,
    ),
    Body(
        "webhook",
        "POST",
        "/v1/webhooks",
        "live",
        {"url": "https://example.test/h", "events": ["*"]},
        {"url": "str", "events": "list", "description": "str"},
        forwarded=True,
    ),
]


def _nest(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def mutations(kind: str, forwarded: bool) -> list[tuple[str, Any]]:
    """(mutation id, value) for a field of `kind`."""
    nul = "a\x00b"
    out: list[tuple[str, Any]] = []
    if kind in ("str", "text", "addr", "enum", "id"):
        out += [("nul", nul), ("invalid-utf8", f"a{MARK}b"), ("wrong-type", 12345), ("object", {"a": 1})]
        out += [("deep", _nest(40)), ("int-overflow", 2**64), ("huge-array", ["x"] * 5000)]
        if kind != "text" and not forwarded:
            out += [(f"break-{i}", f"a{b}b") for i, b in enumerate(BREAKS)]
        if kind in ("addr", "enum", "id", "str"):
            out.append(("over-long", "x" * 100_000))
        if kind == "text":
            out.append(("over-long", "x" * (11 * 1024 * 1024)))
    elif kind == "addrs":
        out += [("nul", [f"a{nul}@example.test"]), ("invalid-utf8", [f"a{MARK}@example.test"])]
        out += [(f"break-{i}", [f"A{b}B <a@example.test>"]) for i, b in enumerate(BREAKS)]
        out += [("wrong-type", 12345), ("deep", _nest(40)), ("huge-array", ["a@example.test"] * 5000)]
        out += [("over-long", ["x" * 100_000 + "@example.test"]), ("int-overflow", [2**64])]
    elif kind == "map":
        out += [("nul-key", {"X-A\x00": "v"}), ("nul-value", {"X-A": nul}), ("invalid-utf8", {"X-A": MARK})]
        out += [(f"break-{i}", {"X-A": f"a{b}b"}) for i, b in enumerate(BREAKS)]
        out += [("trailing-newline-key", {"team\n": "v"}), ("wrong-type", [1]), ("deep", {"X-A": _nest(40)})]
        out += [("huge", {f"k{i}": "v" for i in range(5000)}), ("over-long", {"X-A": "x" * 100_000})]
        out += [("int-overflow", {"X-A": 2**64})]
    elif kind == "json":
        out += [("nul-key", {"k\x00": 1}), ("nul-value", {"k": [{"v": nul}]}), ("invalid-utf8", {"k": MARK})]
        out += [("wrong-type", "text"), ("deep", {"k": _nest(40)}), ("huge-array", {"k": [1] * 5000})]
        out += [("over-long", {"k": "x" * 100_000})]
    elif kind == "int":
        out += [("int4-overflow", 2**31), ("int64-overflow", 2**63), ("huge", 10**40), ("negative", -(2**31) - 1)]
        out += [("wrong-type", "5"), ("float", 1.5), ("nul", nul), ("deep", _nest(40)), ("bool-ish", [True])]
    elif kind == "bool":
        out += [("wrong-type", "yes"), ("nul", nul), ("int", 2**64), ("deep", _nest(40))]
    elif kind == "list":
        out += [("nul", [nul]), ("invalid-utf8", [MARK]), ("wrong-type", "*"), ("deep", _nest(40))]
        out += [("int-overflow", [2**64])]
    return out


CASES = [
    pytest.param(body, field, mid, value, id=f"{body.name}-{field}-{mid}")
    for body in BODIES
    for field, kind in body.fields.items()
    for mid, value in mutations(kind, body.forwarded)
]


@dataclass
class World:
    tenant: Tenant
    domain: str


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> World:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    return World(tenant, domain)


async def _counts(rt: Runtime) -> tuple[Any, ...]:
    tables = await table_counts(
        rt, "emails", "email_recipients", "email_events", "outbox", "tenants", "api_keys", "domains", "suppressions"
    )
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT string_agg(name || status || coalesce(monthly_quota, -1) || coalesce(rate_limit, -1)"
            " || coalesce(default_from, '-'), ',')"
            " AS tenant_state FROM tenants"
        )
        row = await cur.fetchone()
    assert row is not None
    return (*tables, row["tenant_state"])


def _encode(body: dict[str, Any]) -> bytes:
    raw = msgspec.json.encode(body)
    return raw.replace(MARK.encode(), b"\xff\xfe")


@pytest.mark.parametrize(("body", "field", "mutation", "value"), CASES)
async def test_bad_input_is_a_spec_error_and_leaves_nothing(
    body: Body, field: str, mutation: str, value: Any, world: World, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    valid = {k: (v.format(domain=world.domain) if isinstance(v, str) else v) for k, v in body.valid.items()}
    payload = {**valid, field: value}
    headers = {**(OP if body.auth == "op" else bearer(world.tenant.live)), "Content-Type": "application/json"}
    before = await _counts(runtime)
    resp = await client.request(
        body.method, body.path.format(tenant=world.tenant.id), content=_encode(payload), headers=headers
    )
    assert resp.status_code in (400, 413, 422), resp.text
    err = resp.json()
    assert err["error"] == {400: "invalid_json", 413: "payload_too_large", 422: "validation_error"}[resp.status_code]
    assert err["request_id"] == resp.headers["x-request-id"]
    if resp.status_code == 422:
        assert err["param"] is not None and err["param"].split(".")[0].split("[")[0] == field, err
    assert await _counts(runtime) == before
