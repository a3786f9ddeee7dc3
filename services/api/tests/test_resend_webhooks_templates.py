"""Issue 21, `/resend/templates` and `/resend/webhooks` through the real app (real HTTP, Postgres,
render workers): Resend's template source form kept and answered, `{{{VAR}}}` translated onto the
one Jinja2 renderer (fallbacks applied by the same code as /v1 sends), versions/publish/duplicate/
remove, bad input in Resend's error shape changing nothing, tenant isolation; webhook event names
checked before anything is asked of the webhooks service (the service's side is covered by
services/webhooks/tests/test_resend_format.py and the SDK test in tests/)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from api_testkit import Tenant, add_domain, bearer, make_tenant, table_counts, unique_domain
from mailroom_api.resend.templates import template_defaults
from mailroom_contracts import decode
from mailroom_contracts.events import EmailQueued
from mailroom_kit.runtime import Runtime


@pytest.fixture(scope="module")
async def tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime, "Resend templates")


@pytest.fixture(scope="module")
async def domain(runtime: Runtime, tenant: Tenant) -> str:
    name = unique_domain()
    await add_domain(runtime, tenant.id, name)
    return name


ORDER: dict[str, Any] = {
    "name": "Order shipped",
    "from": "Acme <orders@acme.test>",
    "subject": "Order {{{ORDER_ID}}} shipped",
    "reply_to": ["help@acme.test"],
    "html": "<p>Hi {{{NAME}}}, order {{{ORDER_ID}}} ({{{COUNT}}} items). {{ not jinja }} {% raw %}</p>",
    "text": "Hi {{{NAME}}}",
    "variables": [
        {"key": "NAME", "type": "string", "fallback_value": "there"},
        {"key": "ORDER_ID", "type": "string"},
        {"key": "COUNT", "type": "number", "fallback_value": 1},
    ],
}


def resend_error(resp: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["statusCode"] == status and body["name"] == name and body["message"], body
    return body


async def create(client: httpx.AsyncClient, token: str, **overrides: Any) -> str:
    resp = await client.post("/resend/templates", json={**ORDER, **overrides}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "template" and body["id"].startswith("tpl_")
    return str(body["id"])


async def queued(runtime: Runtime, email_id: str) -> EmailQueued:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox WHERE position(%(id)s::bytea IN payload) > 0", {"id": email_id.encode()}
        )
        rows = await cur.fetchall()
    for row in rows:
        event = decode(bytes(row["payload"]), EmailQueued)
        if event.email_id == email_id:
            return event
    raise AssertionError(f"no EmailQueued for {email_id}")


async def test_template_source_form_fallbacks_versions_and_send(
    client: httpx.AsyncClient, tenant: Tenant, domain: str, runtime: Runtime
) -> None:
    token = tenant.live
    alias = f"order-{time.time_ns()}"
    tid = await create(client, token, alias=alias)

    got = (await client.get(f"/resend/templates/{tid}", headers=bearer(token))).json()
    assert got["object"] == "template" and got["id"] == tid and got["alias"] == alias
    assert (got["status"], got["published_at"]) == ("draft", None)
    for key in ("name", "from", "subject", "reply_to", "html", "text", "variables"):
        assert got[key] == ORDER[key], key  # Resend's source form, not the translation
    assert (await client.get(f"/resend/templates/{alias}", headers=bearer(token))).json()["id"] == tid
    async with runtime.pool.connection() as conn:  # what the /resend/emails route applies
        assert await template_defaults(conn, tenant.id, tid) == {"from": ORDER["from"], "reply_to": ORDER["reply_to"]}
        other = await make_tenant(runtime, "Not the owner")
        assert await template_defaults(conn, other.id, tid) == {}

    # The translation is what /v1 sees and renders: one renderer, fallbacks as defaults.
    v1 = (await client.get(f"/v1/templates/{tid}", headers=bearer(token))).json()
    assert v1["versions"][0]["variables"] == {
        "NAME": {"type": "string", "required": False, "default": "there"},
        "ORDER_ID": {"type": "string", "required": True},
        "COUNT": {"type": "number", "required": False, "default": 1},
    }
    preview = await client.post(
        f"/v1/templates/{tid}/render", json={"data": {"ORDER_ID": "A<1>"}}, headers=bearer(token)
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["subject"] == "Order A<1> shipped"
    assert preview.json()["html"] == "<p>Hi there, order A&lt;1&gt; (1 items). {{ not jinja }} {% raw %}</p>"
    assert preview.json()["text"] == "Hi there"
    missing = await client.post(f"/v1/templates/{tid}/render", json={"data": {}}, headers=bearer(token))
    assert missing.status_code == 422 and missing.json()["param"] == "data.ORDER_ID"

    # Publish, then a send naming it gets the fallbacks (what R1's /resend/emails calls too).
    assert (await client.post(f"/resend/templates/{tid}/publish", headers=bearer(token))).json() == {
        "object": "template",
        "id": tid,
    }
    published = (await client.get(f"/resend/templates/{tid}", headers=bearer(token))).json()
    assert published["status"] == "published" and published["published_at"] is not None
    again = await client.post(f"/resend/templates/{tid}/publish", headers=bearer(token))
    resend_error(again, 422, "validation_error")
    send = {"from": f"Acme <hi@{domain}>", "to": "ann@example.test", "template": {"id": tid, "data": {"ORDER_ID": "7"}}}
    sent = await client.post("/v1/emails", json=send, headers=bearer(token))
    assert sent.status_code == 202, sent.text
    event = await queued(runtime, sent.json()["id"])
    assert event.subject == "Order 7 shipped" and event.html is not None and "Hi there, order 7 (1 items)" in event.html

    # Through /resend/emails a send that leaves out `from` and `reply_to` takes the template's.
    own = await create(client, token, **{"from": f"Orders <orders@{domain}>"})
    await client.post(f"/resend/templates/{own}/publish", headers=bearer(token))
    bare_send = {"to": "ann@example.test", "template": {"id": own, "variables": {"ORDER_ID": "8"}}}
    via_resend = await client.post("/resend/emails", json=bare_send, headers=bearer(token))
    assert via_resend.status_code == 200, via_resend.text
    event = await queued(runtime, via_resend.json()["id"])
    assert (event.from_.email, event.subject) == (f"orders@{domain}", "Order 8 shipped")
    assert [a.email for a in event.reply_to] == ["help@acme.test"]
    given_from = {**bare_send, "from": f"Other <other@{domain}>"}
    event = await queued(
        runtime, (await client.post("/resend/emails", json=given_from, headers=bearer(token))).json()["id"]
    )
    assert event.from_.email == f"other@{domain}"
    await client.delete(f"/resend/templates/{own}", headers=bearer(token))

    # No subject in the template (Resend allows it): the send must give one, else a clear 422.
    bare = await create(client, token, subject=None, variables=ORDER["variables"], html="<p>{{{NAME}}}</p>")
    await client.post(f"/resend/templates/{bare}/publish", headers=bearer(token))
    assert (await client.get(f"/resend/templates/{bare}", headers=bearer(token))).json()["subject"] is None
    no_subject = await client.post(
        "/v1/emails", json={**send, "template": {"id": bare, "data": {"ORDER_ID": "1"}}}, headers=bearer(token)
    )
    assert no_subject.status_code == 422 and no_subject.json()["param"] == "subject", no_subject.text
    given = await client.post(
        "/v1/emails",
        json={**send, "subject": "Given", "template": {"id": bare, "data": {"ORDER_ID": "1"}}},
        headers=bearer(token),
    )
    assert given.status_code == 202, given.text
    await client.delete(f"/resend/templates/{bare}", headers=bearer(token))

    # Update: a new draft version (status back to draft until published), the source replaced.
    # The kept subject names ORDER_ID: dropping its declaration is refused, nothing changes.
    refused = await client.patch(
        f"/resend/templates/{tid}", json={"variables": ORDER["variables"][:1]}, headers=bearer(token)
    )
    assert "declares no variable ORDER_ID" in resend_error(refused, 422, "validation_error")["message"]
    upd = await client.patch(
        f"/resend/templates/{tid}",
        json={"html": "<b>{{{NAME}}}</b>", "name": "Shipped", "variables": ORDER["variables"][:2]},
        headers=bearer(token),
    )
    assert upd.status_code == 200 and upd.json() == {"object": "template", "id": tid}, upd.text
    after = (await client.get(f"/resend/templates/{tid}", headers=bearer(token))).json()
    assert (after["name"], after["html"], after["status"], after["subject"]) == (
        "Shipped",
        "<b>{{{NAME}}}</b>",
        "draft",
        ORDER["subject"],
    )
    assert after["variables"] == ORDER["variables"][:2]
    v1 = (await client.get(f"/v1/templates/{tid}", headers=bearer(token))).json()
    assert v1["latest_version"] == 2 and v1["published_version"] == 1

    # Duplicate: a new draft with the same source; remove.
    dup = await client.post(f"/resend/templates/{tid}/duplicate", headers=bearer(token))
    assert dup.status_code == 200, dup.text
    copy_id = dup.json()["id"]
    copy = (await client.get(f"/resend/templates/{copy_id}", headers=bearer(token))).json()
    assert copy_id != tid and copy["name"] == "Shipped (copy)" and copy["alias"] is None
    assert (copy["html"], copy["status"]) == ("<b>{{{NAME}}}</b>", "draft")

    listed = (await client.get("/resend/templates", params={"limit": 1}, headers=bearer(token))).json()
    assert listed["object"] == "list" and listed["has_more"] is True and [t["id"] for t in listed["data"]] == [copy_id]
    assert set(listed["data"][0]) == {"id", "name", "alias", "status", "published_at", "created_at", "updated_at"}
    nxt = (await client.get("/resend/templates", params={"limit": 1, "after": copy_id}, headers=bearer(token))).json()
    assert [t["id"] for t in nxt["data"]] == [tid]
    prev = (await client.get("/resend/templates", params={"limit": 5, "before": tid}, headers=bearer(token))).json()
    assert [t["id"] for t in prev["data"]] == [copy_id] and prev["has_more"] is False

    removed = await client.delete(f"/resend/templates/{copy_id}", headers=bearer(token))
    assert removed.json() == {"object": "template", "id": copy_id, "deleted": True}
    resend_error(await client.get(f"/resend/templates/{copy_id}", headers=bearer(token)), 404, "not_found")


async def test_bad_templates_are_refused_in_resends_shape_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    token = tenant.live
    before = await table_counts(runtime, "templates", "template_versions", "resend_templates")
    for body, fragment in (
        ({**ORDER, "html": "<p>{{{UNDECLARED}}}</p>"}, "declares no variable UNDECLARED"),
        ({**ORDER, "variables": [{"key": "NAME", "type": "number", "fallback_value": "x"}]}, "fallback_value"),
        ({**ORDER, "variables": [{"key": "NAME", "type": "date"}]}, "'date'"),
        ({**ORDER, "variables": [{"key": "bad-key", "type": "string"}]}, "key"),
        ({**ORDER, "variables": [ORDER["variables"][0], ORDER["variables"][0]]}, "declared twice"),
        ({**ORDER, "colour": "red"}, "colour"),
        ({k: v for k, v in ORDER.items() if k != "html"}, "html"),
        ({**ORDER, "name": ""}, "name"),
    ):
        resp = await client.post("/resend/templates", json=body, headers=bearer(token))
        err = resend_error(resp, 422, "validation_error")
        assert fragment in err["message"] or fragment in str(resp.json()), (body, resp.text)
    tid = await create(client, token)
    bad_update = await client.patch(f"/resend/templates/{tid}", json={"html": "{{{NOPE}}}"}, headers=bearer(token))
    resend_error(bad_update, 422, "validation_error")
    assert (await client.get(f"/resend/templates/{tid}", headers=bearer(token))).json()["html"] == ORDER["html"]
    assert await table_counts(runtime, "templates", "template_versions", "resend_templates") == tuple(
        n + 1 for n in before
    )
    # A /v1 template is shown from its Jinja2 source; its content is changed through /v1 only.
    v1 = await client.post(
        "/v1/templates",
        json={"name": "J", "subject": "Hi {{ n }}", "html": "<p>{{ n }}</p>", "variables": {"n": {"type": "string"}}},
        headers=bearer(token),
    )
    jid = v1.json()["id"]
    shown = (await client.get(f"/resend/templates/{jid}", headers=bearer(token))).json()
    assert shown["html"] == "<p>{{ n }}</p>" and shown["variables"] == [{"key": "n", "type": "string"}]
    resend_error(
        await client.patch(f"/resend/templates/{jid}", json={"html": "x"}, headers=bearer(token)),
        422,
        "validation_error",
    )

    # Another tenant sees none of it; no key at all is Resend's missing_api_key.
    other = await make_tenant(runtime, "Other")
    resend_error(await client.get(f"/resend/templates/{tid}", headers=bearer(other.live)), 404, "not_found")
    resend_error(await client.delete(f"/resend/templates/{tid}", headers=bearer(other.live)), 404, "not_found")
    assert (await client.get("/resend/templates", headers=bearer(other.live))).json()["data"] == []
    resend_error(await client.get("/resend/templates"), 401, "missing_api_key")


async def test_webhook_event_names_are_checked_before_the_service_is_asked(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = tenant.live
    for events, fragment in (
        (["email.sent", "email.received"], "not supported"),
        (["contact.created"], "not supported"),
        (["email.queued"], "unknown event type"),
        (["*"], "unknown event type"),
    ):
        resp = await client.post(
            "/resend/webhooks",
            json={"endpoint": "https://hooks.example.test/x", "events": events},
            headers=bearer(token),
        )
        err = resend_error(resp, 422, "validation_error")
        assert fragment in err["message"], resp.text
    for body in (
        {"endpoint": "https://hooks.example.test/x"},
        {"events": ["email.sent"]},
        {"endpoint": "", "events": []},
    ):
        resend_error(await client.post("/resend/webhooks", json=body, headers=bearer(token)), 422, "validation_error")
    # A path id that cannot be a webhook id is not_found without asking the service.
    resend_error(await client.get("/resend/webhooks/wh_nope", headers=bearer(token)), 404, "not_found")
    resend_error(
        await client.patch(f"/resend/webhooks/wh_{'0' * 26}", json={"status": "paused"}, headers=bearer(token)),
        422,
        "validation_error",
    )
