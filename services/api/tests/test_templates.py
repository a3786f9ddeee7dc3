"""Templates (issue 17) through the real app over real HTTP, real Postgres and real render workers:
create / version / publish / delete, aliases, the typed-variable and render matrix, the classic
sandbox escapes and resource bombs (each a fast 422), sends by id or alias (single and batch) with
what the log and the EmailQueued carry, version pinning and publish switching, the one extra
statement of a templated send, and tenant isolation on every route."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from api_testkit import Tenant, add_domain, assert_error, bearer, make_tenant, serve, table_counts, unique_domain
from mailroom_api.app import create_app
from mailroom_api.tenants import service as tenants
from mailroom_contracts import decode
from mailroom_contracts.events import EmailQueued
from mailroom_kit.runtime import Runtime
from psycopg import AsyncCursor

TIMEOUT = 0.5  # the render timeout of this module's app


@pytest.fixture(scope="module")
async def tpl_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    settings = msgspec.structs.replace(runtime.settings, template_render_timeout_seconds=TIMEOUT)
    async with serve(create_app(dataclasses.replace(runtime, settings=settings))) as c:
        yield c


@dataclasses.dataclass
class Acct:
    tenant: Tenant
    domain: str


@pytest.fixture(scope="module")
async def acct(runtime: Runtime) -> Acct:
    tenant = await make_tenant(runtime, "Templater")
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    return Acct(tenant=tenant, domain=domain)


WELCOME: dict[str, Any] = {
    "name": "Welcome",
    "subject": "Hi {{ user.name }} & co",
    "html": "<p>Hi {{ user.name }}, plan {{ plan }}</p>{% for i in items %}<li>{{ i.title }}</li>{% endfor %}",
    "text": "Hi {{ user.name }}, plan {{ plan }}{% for i in items %} - {{ i.title }}{% endfor %}",
    "variables": {
        "user": {"type": "object", "required": True},
        "user.name": {"type": "string", "required": True},
        "plan": {"type": "string", "default": "free"},
        "items": {"type": "list", "default": []},
        "vip": {"type": "boolean"},
        "count": {"type": "number"},
    },
}


async def _create(client: httpx.AsyncClient, token: str, **overrides: Any) -> dict[str, Any]:
    resp = await client.post("/v1/templates", json={**WELCOME, **overrides}, headers=bearer(token))
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _publish(client: httpx.AsyncClient, token: str, ref: str, version: int | None = None) -> dict[str, Any]:
    body = {} if version is None else {"version": version}
    resp = await client.post(f"/v1/templates/{ref}/publish", json=body, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


async def _render(
    client: httpx.AsyncClient, token: str, ref: str, data: dict[str, Any], **extra: Any
) -> httpx.Response:
    return await client.post(f"/v1/templates/{ref}/render", json={"data": data, **extra}, headers=bearer(token))


def _alias() -> str:
    return f"welcome-{time.time_ns()}"


# ----------------------------------------------------------------------------- CRUD


async def test_create_version_publish_list_and_delete(tpl_client: httpx.AsyncClient, acct: Acct) -> None:
    token, alias = acct.tenant.live, _alias()
    created = await _create(tpl_client, token, alias=alias)
    assert created["id"].startswith("tpl_") and created["alias"] == alias
    assert (created["latest_version"], created["published_version"]) == (1, None)
    [v1] = created["versions"]
    assert (v1["version"], v1["status"], v1["published_at"]) == (1, "draft", None)
    assert v1["variables"]["user.name"] == {"type": "string", "required": True}
    assert v1["variables"]["plan"] == {"type": "string", "required": False, "default": "free"}

    by_alias = await tpl_client.get(f"/v1/templates/{alias}", headers=bearer(token))
    by_id = await tpl_client.get(f"/v1/templates/{created['id']}", headers=bearer(token))
    assert by_alias.status_code == by_id.status_code == 200 and by_alias.json() == by_id.json() == created

    published = await _publish(tpl_client, token, alias)  # default: the latest draft
    assert published["published_version"] == 1 and published["versions"][0]["status"] == "published"
    resp = await tpl_client.post(f"/v1/templates/{alias}/publish", json={}, headers=bearer(token))
    assert_error(resp, 409, "conflict", "version")  # no draft left
    resp = await tpl_client.post(f"/v1/templates/{alias}/publish", json={"version": 9}, headers=bearer(token))
    assert_error(resp, 404, "not_found", "version")

    resp = await tpl_client.post(
        f"/v1/templates/{created['id']}/versions", json={"subject": "New {{ plan }}"}, headers=bearer(token)
    )
    assert resp.status_code == 201, resp.text
    two = resp.json()
    assert (two["latest_version"], two["published_version"]) == (2, 1)
    assert [(v["version"], v["status"]) for v in two["versions"]] == [(2, "draft"), (1, "published")]
    assert two["versions"][0]["html"] == WELCOME["html"]  # copied from the latest
    switched = await _publish(tpl_client, token, alias)
    assert [(v["version"], v["status"]) for v in switched["versions"]] == [(2, "published"), (1, "unpublished")]
    rolled_back = await _publish(tpl_client, token, alias, 1)
    assert rolled_back["published_version"] == 1

    # The list pages newest first.
    others = [await _create(tpl_client, token) for _ in range(2)]
    page = (await tpl_client.get("/v1/templates", params={"limit": 2}, headers=bearer(token))).json()
    assert [t["id"] for t in page["data"]] == [others[1]["id"], others[0]["id"]] and page["next_cursor"]
    rest = (
        await tpl_client.get(
            "/v1/templates", params={"limit": 100, "cursor": page["next_cursor"]}, headers=bearer(token)
        )
    ).json()
    assert created["id"] in [t["id"] for t in rest["data"]] and "versions" not in rest["data"][0]

    deleted = await tpl_client.delete(f"/v1/templates/{alias}", headers=bearer(token))
    assert deleted.status_code == 200 and deleted.json() == {"id": created["id"], "deleted": True}
    for ref in (alias, created["id"]):
        assert_error(await tpl_client.get(f"/v1/templates/{ref}", headers=bearer(token)), 404, "not_found", None)
    assert_error(await tpl_client.delete(f"/v1/templates/{alias}", headers=bearer(token)), 404, "not_found", None)
    await _create(tpl_client, token, alias=alias)  # the alias is free again


async def test_bad_templates_are_refused_and_write_nothing(
    tpl_client: httpx.AsyncClient, acct: Acct, runtime: Runtime
) -> None:
    token, alias = acct.tenant.live, _alias()
    await _create(tpl_client, token, alias=alias)
    before = await table_counts(runtime, "templates", "template_versions")
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"alias": alias}, 409, "conflict", "alias"),
        ({"alias": "tpl_abc"}, 422, "validation_error", "alias"),
        ({"alias": "Bad Alias"}, 422, "validation_error", "alias"),
        ({"html": "{% for %}"}, 422, "validation_error", "html"),
        ({"subject": "{{ unclosed"}, 422, "validation_error", "subject"),
        ({"text": "{% if x %}"}, 422, "validation_error", "text"),
        ({"html": "  "}, 422, "validation_error", "html"),
        ({"name": " "}, 422, "validation_error", "name"),
        ({"variables": {"n": {"type": "number", "default": "one"}}}, 422, "validation_error", "variables.n.default"),
        ({"variables": {"n": {"type": "date"}}}, 422, "validation_error", "variables.n.type"),
        ({"variables": {"1bad": {"type": "string"}}}, 422, "validation_error", "variables.1bad"),
        (
            {"variables": {"u": {"type": "string"}, "u.name": {"type": "string"}}},
            422,
            "validation_error",
            "variables.u.type",
        ),
        ({"colour": "blue"}, 422, "validation_error", "colour"),
    ]
    for overrides, status, code, param in cases:
        resp = await tpl_client.post("/v1/templates", json={**WELCOME, **overrides}, headers=bearer(token))
        assert_error(resp, status, code, param)
    bad_version = await tpl_client.post(f"/v1/templates/{alias}/versions", json={"html": "{{"}, headers=bearer(token))
    assert_error(bad_version, 422, "validation_error", "html")
    assert await table_counts(runtime, "templates", "template_versions") == before
    # sending-access keys manage no templates
    resp = await tpl_client.post("/v1/templates", json=WELCOME, headers=bearer(acct.tenant.sending))
    assert_error(resp, 403, "insufficient_permission", None)


# ----------------------------------------------------------------------------- the render matrix


async def test_render_matrix(tpl_client: httpx.AsyncClient, acct: Acct) -> None:
    token = acct.tenant.live
    tpl = await _create(tpl_client, token)
    ref = tpl["id"]
    data = {"user": {"name": "<Ann & Bob>"}, "items": [{"title": "<one>"}, {"title": "two"}]}
    resp = await _render(tpl_client, token, ref, data)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert (out["id"], out["version"]) == (ref, 1)  # a draft: previews render any version
    assert out["subject"] == "Hi <Ann & Bob> & co"  # subject and text are not escaped
    assert out["html"] == "<p>Hi &lt;Ann &amp; Bob&gt;, plan free</p><li>&lt;one&gt;</li><li>two</li>"
    assert out["text"] == "Hi <Ann & Bob>, plan free - <one> - two"  # default applied

    ok = {"user": {"name": "A"}}
    refused: list[tuple[dict[str, Any], str]] = [
        ({}, "data.user"),
        ({"user": {}}, "data.user.name"),
        ({"user": {"name": 5}}, "data.user.name"),
        ({"user": "Ann"}, "data.user"),
        ({**ok, "plan": ["x"]}, "data.plan"),
        ({**ok, "items": {"a": 1}}, "data.items"),
        ({**ok, "vip": "yes"}, "data.vip"),
        ({**ok, "count": True}, "data.count"),  # a boolean is not a number
        ({**ok, "count": "3"}, "data.count"),
        ({**ok, "extra": 1}, "data.extra"),
        ({"user": {"name": "A", "age": 3}}, "data.user.age"),
    ]
    for bad, param in refused:
        assert_error(await _render(tpl_client, token, ref, bad), 422, "invalid_template_data", param)
    for good in ({**ok, "count": 2.5, "vip": False}, {**ok, "count": 7, "plan": None}):
        assert (await _render(tpl_client, token, ref, good)).status_code == 200
    assert_error(await _render(tpl_client, token, ref, ok, version=5), 404, "not_found", "version")

    # No text part: it is generated from the rendered html. No variables: any data.
    loose = await _create(tpl_client, token, html="<h1>{{ title }}</h1><p>{{ body }}</p>", text=None, variables={})
    out = (await _render(tpl_client, token, loose["id"], {"title": "T", "anything": [1]})).json()
    assert out["html"] == "<h1>T</h1><p></p>" and "T" in out["text"] and "<h1>" not in out["text"]


async def test_extra_variables_may_be_ignored(runtime: Runtime, acct: Acct) -> None:
    settings = msgspec.structs.replace(runtime.settings, template_extra_variables="ignore")
    async with serve(create_app(dataclasses.replace(runtime, settings=settings))) as client:
        tpl = await _create(client, acct.tenant.live)
        resp = await _render(client, acct.tenant.live, tpl["id"], {"user": {"name": "A", "x": 1}, "y": 2})
        assert resp.status_code == 200, resp.text
        assert_error(
            await _render(client, acct.tenant.live, tpl["id"], {"y": 2}), 422, "invalid_template_data", "data.user"
        )


ESCAPES = {
    "mro": "{{ ''.__class__.__mro__ }}",
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "context": "{{ self._TemplateReference__context }}",
    "format": "{{ '{0.__class__}'.format(1) }}",
    "include": "{% include '/etc/passwd' %}",
    "range": "{% for i in range(10**9) %}x{% endfor %}",
    "multiply": "{{ 'x' * 10**9 }}",
    "power": "{{ 7 ** 999999999 }}",
    "percent": "{{ '%0999999999d' % 1 }}",
    "center": "{{ 'x'|center(999999999) }}",
    "recursive macro": "{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}",
    "branching macro": "{% macro m(n) %}{% if n < 60 %}{{ m(n+1) }}{{ m(n+1) }}{% endif %}{% endmacro %}{{ m(0) }}",
    "silent nested loops": "{% for i in range(99999) %}{% for j in items %}{% endfor %}{% endfor %}",
    "output": "{% for i in range(99999) %}{% for j in range(99999) %}{{ 'y' * 999 }}{% endfor %}{% endfor %}",
    "doubling": "{% set ns = namespace(s='xy') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}x",
}


@pytest.mark.parametrize("name", list(ESCAPES))
async def test_sandbox_escapes_and_bombs_fail_fast(tpl_client: httpx.AsyncClient, acct: Acct, name: str) -> None:
    tpl = await _create(tpl_client, acct.tenant.live, html=ESCAPES[name], text="t", variables={})
    started = time.monotonic()
    resp = await _render(tpl_client, acct.tenant.live, tpl["id"], {"items": list(range(99999))})
    elapsed = time.monotonic() - started
    assert_error(resp, 422, "invalid_template_data", "data")
    message = resp.json()["message"]
    assert "<class" not in message and "function" not in message and "root" not in message
    assert elapsed < TIMEOUT + 5, elapsed  # bounded by the render timeout (plus a loaded machine's slack)
    # The worker (killed or not) is ready for the next render.
    fine = await _create(tpl_client, acct.tenant.live, html="ok {{ n }}", text=None, variables={})
    assert (await _render(tpl_client, acct.tenant.live, fine["id"], {"n": 1})).json()["html"] == "ok 1"


# ----------------------------------------------------------------------------- sending


def _send(acct: Acct, template: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"from": f"Acme <hi@{acct.domain}>", "to": "ann@example.test", "template": template, **overrides}


async def _content(client: httpx.AsyncClient, token: str, email_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/emails/{email_id}", params={"include": "content"}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _queued(runtime: Runtime, email_id: str) -> EmailQueued:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox WHERE position(%(id)s::bytea IN payload) > 0",
            {"id": email_id.encode()},
        )
        rows = await cur.fetchall()
    for row in rows:
        event = decode(bytes(row["payload"]), EmailQueued)
        if event.email_id == email_id:
            return event
    raise AssertionError(f"no EmailQueued for {email_id}")


async def test_send_by_alias_and_id_pins_versions_and_publish_switches(
    tpl_client: httpx.AsyncClient, acct: Acct, runtime: Runtime
) -> None:
    live, test = acct.tenant.live, acct.tenant.test
    alias = _alias()
    tpl = await _create(tpl_client, live, alias=alias)
    data = {"user": {"name": "Ann <3"}}

    # Nothing published: a live send names no version → 422; a draft needs a test key.
    resp = await tpl_client.post("/v1/emails", json=_send(acct, {"id": alias, "data": data}), headers=bearer(live))
    assert_error(resp, 422, "validation_error", "template.version")
    resp = await tpl_client.post(
        "/v1/emails", json=_send(acct, {"id": alias, "version": 1, "data": data}), headers=bearer(live)
    )
    assert_error(resp, 422, "validation_error", "template.version")
    draft = await tpl_client.post(
        "/v1/emails", json=_send(acct, {"id": alias, "version": 1, "data": data}), headers=bearer(test)
    )
    assert draft.status_code == 202, draft.text
    assert (await _content(tpl_client, test, draft.json()["id"]))["template"] == {"id": tpl["id"], "version": 1}

    await _publish(tpl_client, live, alias)
    first = await tpl_client.post("/v1/emails", json=_send(acct, {"id": alias, "data": data}), headers=bearer(live))
    assert first.status_code == 202, first.text
    one = await _content(tpl_client, live, first.json()["id"])
    assert one["template"] == {"id": tpl["id"], "version": 1}
    assert one["subject"] == "Hi Ann <3 & co"
    assert one["html"].startswith("<p>Hi Ann &lt;3, plan free</p>") and one["text"] == "Hi Ann <3, plan free"
    event = await _queued(runtime, first.json()["id"])
    assert (event.subject, event.html, event.text) == (one["subject"], one["html"], one["text"])

    # v2 published: new sends get it, the earlier email keeps v1; naming v1 still gets v1.
    resp = await tpl_client.post(
        f"/v1/templates/{alias}/versions", json={"subject": "V2 {{ user.name }}", "text": None}, headers=bearer(live)
    )
    assert resp.status_code == 201
    await _publish(tpl_client, live, alias)
    second = await tpl_client.post(
        "/v1/emails", json=_send(acct, {"id": tpl["id"], "data": data}), headers=bearer(live)
    )
    pinned = await tpl_client.post(
        "/v1/emails", json=_send(acct, {"id": alias, "version": 1, "data": data}), headers=bearer(live)
    )
    two = await _content(tpl_client, live, second.json()["id"])
    assert (two["template"], two["subject"]) == ({"id": tpl["id"], "version": 2}, "V2 Ann <3")
    assert two["text"].strip() == "Hi Ann <3, plan free"  # v2 has no text part: generated from its html
    assert (await _content(tpl_client, live, first.json()["id"]))["subject"] == "Hi Ann <3 & co"
    three = await _content(tpl_client, live, pinned.json()["id"])
    assert (three["template"]["version"], three["subject"]) == (1, "Hi Ann <3 & co")

    # Given fields override the rendered ones; the send's own checks apply to the rendered content.
    override = await tpl_client.post(
        "/v1/emails",
        json=_send(acct, {"id": alias, "data": data}, subject="Mine", text="my text"),
        headers=bearer(live),
    )
    mine = await _content(tpl_client, live, override.json()["id"])
    assert (mine["subject"], mine["text"]) == ("Mine", "my text") and mine["html"].startswith("<p>Hi Ann")

    # Bad data, a version that does not exist, a deleted template: refused, nothing written.
    before = await table_counts(runtime, "emails", "outbox")
    refusals: list[tuple[dict[str, Any], int, str, str]] = [
        ({"id": alias, "data": {}}, 422, "invalid_template_data", "template.data.user"),
        ({"id": alias, "data": {**data, "zzz": 1}}, 422, "invalid_template_data", "template.data.zzz"),
        ({"id": alias, "version": 7, "data": data}, 404, "not_found", "template.version"),
        ({"id": "no-such-alias", "data": data}, 404, "not_found", "template.id"),
        ({"data": data}, 422, "validation_error", "template.id"),
    ]
    for template, status, code, param in refusals:
        resp = await tpl_client.post("/v1/emails", json=_send(acct, template), headers=bearer(live))
        assert_error(resp, status, code, param)
    assert (await tpl_client.delete(f"/v1/templates/{alias}", headers=bearer(live))).status_code == 200
    for ref in (alias, tpl["id"]):
        resp = await tpl_client.post("/v1/emails", json=_send(acct, {"id": ref, "data": data}), headers=bearer(live))
        assert_error(resp, 404, "not_found", "template.id")
    assert await table_counts(runtime, "emails", "outbox") == before
    # The log keeps what was sent.
    assert (await _content(tpl_client, live, first.json()["id"]))["template"] == {"id": tpl["id"], "version": 1}


async def test_rendered_content_meets_the_send_rules(tpl_client: httpx.AsyncClient, acct: Acct) -> None:
    token = acct.tenant.live
    tpl = await _create(tpl_client, token, subject="{{ s }}", html="<p>{{ body }}</p>", text=None, variables={})
    await _publish(tpl_client, token, tpl["id"])
    resp = await tpl_client.post(
        "/v1/emails", json=_send(acct, {"id": tpl["id"], "data": {"s": "x" * 999}}), headers=bearer(token)
    )
    assert_error(resp, 422, "validation_error", "subject")
    big = {"id": tpl["id"], "data": {"s": "ok", "body": "é" * 3_000_000}}
    resp = await tpl_client.post("/v1/emails", json=_send(acct, big), headers=bearer(token))
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"
    # A subject template's line breaks fold into one line.
    folded = await _create(tpl_client, token, subject="{% if 1 %}\nHi\n{% endif %}", text=None, variables={})
    await _publish(tpl_client, token, folded["id"])
    resp = await tpl_client.post("/v1/emails", json=_send(acct, {"id": folded["id"]}), headers=bearer(token))
    assert resp.status_code == 202, resp.text
    assert (await _content(tpl_client, token, resp.json()["id"]))["subject"] == "Hi"


async def test_batch_items_with_templates(tpl_client: httpx.AsyncClient, acct: Acct, runtime: Runtime) -> None:
    token = acct.tenant.live
    tpl = await _create(tpl_client, token, alias=_alias())
    await _publish(tpl_client, token, tpl["id"])
    data = {"user": {"name": "Bo"}}
    items: list[dict[str, Any]] = [
        _send(acct, {"id": tpl["alias"], "data": data}),
        _send(acct, {"id": tpl["id"], "data": {}}),
        {"from": f"hi@{acct.domain}", "to": "x@example.test", "subject": "plain", "text": "t"},
        _send(acct, {"id": "nope", "data": data}),
        _send(acct, {"id": tpl["id"], "version": 1, "data": {"user": {"name": "Cy"}}}, subject="own"),
        _send(acct, {"id": 5}),
    ]
    resp = await tpl_client.post("/v1/emails/batch", json={"emails": items}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["queued"], body["failed"]) == (3, 3)
    refused = {d["index"]: (d["error"], d["param"]) for d in body["data"] if "error" in d}
    assert refused == {
        1: ("invalid_template_data", "template.data.user"),
        3: ("not_found", "template.id"),
        5: ("validation_error", "template.id"),
    }
    ids = {d["index"]: d["id"] for d in body["data"] if "id" in d}
    first = await _content(tpl_client, token, ids[0])
    assert (first["subject"], first["template"]) == ("Hi Bo & co", {"id": tpl["id"], "version": 1})
    assert (await _content(tpl_client, token, ids[2]))["template"] is None
    last = await _content(tpl_client, token, ids[4])
    assert last["subject"] == "own" and "Hi Cy" in last["html"]


async def test_a_templated_send_adds_one_statement(
    tpl_client: httpx.AsyncClient, acct: Acct, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = acct.tenant.live
    tpl = await _create(tpl_client, token)
    await _publish(tpl_client, token, tpl["id"])
    body = _send(acct, {"id": tpl["id"], "data": {"user": {"name": "A"}}})
    assert (await tpl_client.post("/v1/emails", json=body, headers=bearer(token))).status_code == 202  # warm
    statements: list[str] = []
    execute = AsyncCursor.execute

    async def counted(self: AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        text = str(query)
        # Not the rate limiter's lease either (issue 23): its own statement about once a second.
        if "pg_notify" not in text and "FROM api_keys" not in text and "rate_buckets" not in text:
            statements.append(" ".join(text.split()[:2]))
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(AsyncCursor, "execute", counted)
    assert (await tpl_client.post("/v1/emails", json=body, headers=bearer(token))).status_code == 202
    assert statements == ["SELECT r.ref,", "WITH item"]  # the template, then the (grouped) accept


# ----------------------------------------------------------------------------- isolation


async def test_another_tenants_templates_are_not_found(
    tpl_client: httpx.AsyncClient, acct: Acct, runtime: Runtime
) -> None:
    alias = _alias()
    mine = await _create(tpl_client, acct.tenant.live, alias=alias)
    await _publish(tpl_client, acct.tenant.live, alias)
    other = await make_tenant(runtime, "Other")
    headers = bearer(other.live)
    for ref in (mine["id"], alias):
        assert_error(await tpl_client.get(f"/v1/templates/{ref}", headers=headers), 404, "not_found", None)
        for path, body in (("versions", {"subject": "x"}), ("publish", {}), ("render", {"data": {}})):
            resp = await tpl_client.post(f"/v1/templates/{ref}/{path}", json=body, headers=headers)
            assert_error(resp, 404, "not_found", None)
        assert_error(await tpl_client.delete(f"/v1/templates/{ref}", headers=headers), 404, "not_found", None)
        send = {"from": "a@anything.test", "to": "b@example.test", "template": {"id": ref, "data": {}}}
        resp = await tpl_client.post("/v1/emails", json=send, headers=bearer(other.test))
        assert_error(resp, 404, "not_found", "template.id")
    assert (await tpl_client.get("/v1/templates", headers=headers)).json() == {"data": [], "next_cursor": None}
    # Theirs may use the same alias; mine is unchanged.
    await _create(tpl_client, other.live, alias=alias)
    still = await tpl_client.get(f"/v1/templates/{alias}", headers=bearer(acct.tenant.live))
    assert still.json()["id"] == mine["id"] and still.json()["published_version"] == 1


async def test_a_paused_tenants_templated_send_is_refused_before_its_template_is_read(
    tpl_client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The tenant's state is checked first: 403 tenant_paused, not the missing template's 404."""
    paused = await make_tenant(runtime, "Paused")
    domain = unique_domain()
    await add_domain(runtime, paused.id, domain)
    async with runtime.pool.connection() as conn, conn.transaction():
        await tenants.change_status(conn, paused.id, "paused", reason="test")
    send = {"from": f"a@{domain}", "to": "b@example.test", "template": {"id": "no-such-alias", "data": {}}}
    resp = await tpl_client.post("/v1/emails", json=send, headers=bearer(paused.live))
    assert_error(resp, 403, "tenant_paused", None)
    batch = await tpl_client.post("/v1/emails/batch", json={"emails": [send]}, headers=bearer(paused.live))
    assert_error(batch, 403, "tenant_paused", None)


def test_template_settings_are_validated() -> None:
    from mailroom_api.settings import ApiSettings

    ok = ApiSettings.from_env({"MAILROOM_API_TEMPLATE_EXTRA_VARIABLES": "ignore", "MAILROOM_API_TEMPLATE_WORKERS": "4"})
    assert (ok.template_extra_variables, ok.template_workers) == ("ignore", 4)
    defaults = ApiSettings.from_env({})
    assert (defaults.template_extra_variables, defaults.template_render_timeout_seconds) == ("error", 1.0)
    for env in (
        {"MAILROOM_API_TEMPLATE_EXTRA_VARIABLES": "maybe"},
        {"MAILROOM_API_TEMPLATE_WORKERS": "0"},
        {"MAILROOM_API_TEMPLATE_RENDER_TIMEOUT_SECONDS": "0"},
        {"MAILROOM_API_TEMPLATE_WORKER_MEMORY_MB": "1"},
    ):
        with pytest.raises(ValueError, match="TEMPLATE"):
            ApiSettings.from_env(env)
