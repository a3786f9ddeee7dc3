"""The Resend-compatible API (`/resend`, issue 21) through the real app, Postgres and JetStream:
send (tags, attachments as base64 and as a byte list, natural-language `scheduled_at`), get in
Resend's shape, reschedule and cancel, Idempotency-Key replay, errors in Resend's shape with its
names and statuses (nothing written when refused), tenants isolated, unsupported resources 404,
suppressions and API keys. The official SDK drives the whole stack in tests/test_resend_sdk_stack.py."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_testkit import Tenant, add_domain, bearer, make_tenant, table_counts, unique_domain
from mailroom_api.resend.emails import parse_scheduled_at
from mailroom_kit.runtime import Runtime

pytestmark = pytest.mark.usefixtures("workers")

TABLES = ("emails", "email_recipients")  # (the outbox drains as the relay runs)


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> tuple[Tenant, Tenant, str]:
    tenant, other = await make_tenant(runtime), await make_tenant(runtime, "Other")
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    return tenant, other, domain


def email(domain: str, **extra: Any) -> dict[str, Any]:
    return {"from": f"Acme <hi@{domain}>", "to": "ada@example.com", "subject": "Hi", "html": "<p>hi</p>", **extra}


def assert_resend_error(resp: httpx.Response, status: int, name: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"statusCode", "name", "message"}, body
    assert (body["statusCode"], body["name"]) == (status, name), body
    assert body["message"]


async def test_send_and_get_in_resend_shape(client: httpx.AsyncClient, world: tuple[Tenant, Tenant, str]) -> None:
    tenant, other, domain = world
    body = email(
        domain,
        cc=["bob@example.com"],
        text="hi",
        tags=[{"name": "category", "value": "welcome"}],
        attachments=[
            {"filename": "a.txt", "content": base64.b64encode(b"hello").decode()},
            {"filename": "b.bin", "content": list(b"\x00\x01\xff"), "content_type": "application/octet-stream"},
            {"filename": "logo.png", "content": base64.b64encode(b"png").decode(), "content_id": "logo"},
        ],
    )
    resp = await client.post("/resend/emails", json=body, headers=bearer(tenant.live))
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"id"}
    email_id = resp.json()["id"]
    assert resp.headers["ratelimit-limit"] and resp.headers["ratelimit-remaining"]

    got = await client.get(f"/resend/emails/{email_id}", headers=bearer(tenant.live))
    assert got.status_code == 200, got.text
    e = got.json()
    assert e["object"] == "email" and e["id"] == email_id
    assert e["to"] == ["ada@example.com"] and e["cc"] == ["bob@example.com"]
    assert (e["subject"], e["html"], e["text"]) == ("Hi", "<p>hi</p>", "hi")
    assert e["tags"] == [{"name": "category", "value": "welcome"}]
    assert e["last_event"] and e["scheduled_at"] is None
    v1 = (await client.get(f"/v1/emails/{email_id}?include=content", headers=bearer(tenant.live))).json()
    assert [(a["filename"], a["size"]) for a in v1["attachments"]] == [("a.txt", 5), ("b.bin", 3), ("logo.png", 3)]
    assert v1["attachments"][2]["content_id"] == "logo"

    # another tenant sees nothing
    assert_resend_error(await client.get(f"/resend/emails/{email_id}", headers=bearer(other.live)), 404, "not_found")


async def test_refusals_in_resend_shape_write_nothing(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str]
) -> None:
    tenant, _, domain = world
    before = await table_counts(runtime, *TABLES)
    assert_resend_error(await client.post("/resend/emails", json=email(domain)), 401, "missing_api_key")
    bad_key = bearer("mr_live_" + "x" * 40)
    assert_resend_error(
        await client.post("/resend/emails", json=email(domain), headers=bad_key), 403, "invalid_api_key"
    )
    auth = bearer(tenant.live)
    assert_resend_error(await client.post("/resend/emails", json={"to": "x"}, headers=auth), 422, "validation_error")
    assert_resend_error(
        await client.post("/resend/emails", content=b"{nope", headers={**auth, "content-type": "application/json"}),
        400,
        "validation_error",
    )
    assert_resend_error(
        await client.post("/resend/emails", json=email(domain, to="not-an-address"), headers=auth),
        422,
        "validation_error",
    )
    assert_resend_error(
        await client.post("/resend/emails", json=email(domain, tags=[{"name": "a", "value": "1"}] * 2), headers=auth),
        422,
        "validation_error",
    )
    assert_resend_error(
        await client.post(
            "/resend/emails", json=email(domain, attachments=[{"filename": "x", "content": [256]}]), headers=auth
        ),
        422,
        "validation_error",
    )
    assert_resend_error(
        await client.post(
            "/resend/emails", json=email(domain, attachments=[{"path": "https://example.com/a.pdf"}]), headers=auth
        ),
        422,
        "validation_error",
    )
    assert_resend_error(
        await client.post("/resend/emails", json=email(domain, scheduled_at="tomorrow-ish"), headers=auth),
        422,
        "validation_error",
    )
    assert_resend_error(
        await client.post("/resend/emails", json=email(unique_domain()), headers=auth), 403, "validation_error"
    )
    assert await table_counts(runtime, *TABLES) == before


async def test_idempotent_replay(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str]
) -> None:
    tenant, _, domain = world
    headers = {**bearer(tenant.live), "Idempotency-Key": "resend-replay-1"}
    first = await client.post("/resend/emails", json=email(domain), headers=headers)
    assert first.status_code == 200, first.text
    before = await table_counts(runtime, *TABLES)
    again = await client.post("/resend/emails", json=email(domain), headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    assert await table_counts(runtime, *TABLES) == before
    other_body = await client.post("/resend/emails", json=email(domain, subject="Other"), headers=headers)
    assert_resend_error(other_body, 409, "invalid_idempotent_request")
    bad = await client.post(
        "/resend/emails", json=email(domain), headers={**bearer(tenant.live), "Idempotency-Key": ""}
    )
    assert_resend_error(bad, 400, "invalid_idempotency_key")


async def test_scheduled_natural_language_reschedule_and_cancel(
    client: httpx.AsyncClient, world: tuple[Tenant, Tenant, str]
) -> None:
    tenant, other, domain = world
    auth = bearer(tenant.live)
    resp = await client.post("/resend/emails", json=email(domain, scheduled_at="in 1 hour"), headers=auth)
    assert resp.status_code == 200, resp.text
    email_id = resp.json()["id"]
    got = (await client.get(f"/resend/emails/{email_id}", headers=auth)).json()
    due = datetime.fromisoformat(got["scheduled_at"])
    assert abs((due - datetime.now(UTC)).total_seconds() - 3600) < 300
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    moved = await client.patch(f"/resend/emails/{email_id}", json={"scheduled_at": later}, headers=auth)
    assert moved.status_code == 200, moved.text
    assert moved.json() == {"id": email_id, "object": "email"}
    got = (await client.get(f"/resend/emails/{email_id}", headers=auth)).json()
    assert abs((datetime.fromisoformat(got["scheduled_at"]) - datetime.fromisoformat(later)).total_seconds()) < 1
    assert_resend_error(
        await client.post(f"/resend/emails/{email_id}/cancel", headers=bearer(other.live)), 404, "not_found"
    )
    canceled = await client.post(f"/resend/emails/{email_id}/cancel", headers=auth)
    assert canceled.status_code == 200 and canceled.json()["id"] == email_id
    assert (await client.get(f"/v1/emails/{email_id}", headers=auth)).json()["status"] == "canceled"
    assert_resend_error(await client.post(f"/resend/emails/{email_id}/cancel", headers=auth), 422, "validation_error")


def test_parse_scheduled_at_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_scheduled_at("in 1 min", now=now) == now + timedelta(minutes=1)
    assert parse_scheduled_at("in 5 minutes", now=now) == now + timedelta(minutes=5)
    assert parse_scheduled_at("in 2 hours", now=now) == now + timedelta(hours=2)
    assert parse_scheduled_at("In 1 day", now=now) == now + timedelta(days=1)
    assert parse_scheduled_at("2026-01-02T10:00:00Z") == datetime(2026, 1, 2, 10, tzinfo=UTC)


@pytest.mark.parametrize("path", ["/resend/audiences", "/resend/broadcasts/b_1", "/resend/contacts", "/resend/inbound"])
async def test_unsupported_resources_404(
    client: httpx.AsyncClient, world: tuple[Tenant, Tenant, str], path: str
) -> None:
    tenant, _, _ = world
    for method in ("GET", "POST", "DELETE"):
        resp = await client.request(method, path, headers=bearer(tenant.live))
        assert_resend_error(resp, 404, "not_found")
        assert "not supported by Mailroom" in resp.json()["message"]


async def test_list_pages_with_after_and_before(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime, "Lister")
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    auth = bearer(tenant.live)
    ids = []
    for i in range(3):
        resp = await client.post("/resend/emails", json=email(domain, subject=f"n{i}"), headers=auth)
        assert resp.status_code == 200, resp.text
        ids.append(resp.json()["id"])
    first = (await client.get("/resend/emails?limit=2", headers=auth)).json()
    assert first["object"] == "list" and first["has_more"] is True
    assert [e["id"] for e in first["data"]] == ids[::-1][:2]
    assert first["data"][0]["subject"] == "n2" and first["data"][0]["last_event"]
    rest = (await client.get(f"/resend/emails?limit=2&after={first['data'][-1]['id']}", headers=auth)).json()
    assert rest["has_more"] is False and [e["id"] for e in rest["data"]] == [ids[0]]
    # `before` pages back towards the newest: the page just newer than the given email
    back = (await client.get(f"/resend/emails?limit=1&before={ids[0]}", headers=auth)).json()
    assert back["has_more"] is True and [e["id"] for e in back["data"]] == [ids[1]]
    back = (await client.get(f"/resend/emails?limit=2&before={ids[0]}", headers=auth)).json()
    assert back["has_more"] is False and [e["id"] for e in back["data"]] == [ids[2], ids[1]]
    both = await client.get(f"/resend/emails?after={ids[1]}&before={ids[0]}", headers=auth)
    assert_resend_error(both, 422, "validation_error")
    assert_resend_error(await client.get("/resend/emails?before=nope", headers=auth), 422, "validation_error")
    assert_resend_error(await client.get("/resend/emails?limit=0", headers=auth), 422, "validation_error")


async def test_batch_strict_and_permissive(
    client: httpx.AsyncClient, runtime: Runtime, world: tuple[Tenant, Tenant, str]
) -> None:
    tenant, _, domain = world
    auth = bearer(tenant.live)
    good = [email(domain, subject="b1", tags=[{"name": "k", "value": "v"}]), email(domain, subject="b2")]
    bad = email(domain, to="nope")
    before = await table_counts(runtime, *TABLES)
    strict = await client.post("/resend/emails/batch", json=[good[0], bad, good[1]], headers=auth)
    assert_resend_error(strict, 422, "validation_error")
    assert "emails[1]" in strict.json()["message"]
    typo = await client.post("/resend/emails/batch", json=[good[0], {**good[1], "subjekt": "x"}], headers=auth)
    assert_resend_error(typo, 422, "validation_error")
    assert await table_counts(runtime, *TABLES) == before

    ok = await client.post("/resend/emails/batch", json=good, headers=auth)
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["data"]) == 2 and ok.json()["errors"] == []

    loose = await client.post(
        "/resend/emails/batch",
        json=[good[0], bad, {**good[1], "subjekt": "x"}, good[1]],
        headers={**auth, "x-batch-validation": "permissive"},
    )
    assert loose.status_code == 200, loose.text
    out = loose.json()
    assert len(out["data"]) == 2 and [e["index"] for e in out["errors"]] == [1, 2]
    for sent in out["data"]:
        got = await client.get(f"/resend/emails/{sent['id']}", headers=auth)
        assert got.status_code == 200
    assert_resend_error(await client.post("/resend/emails/batch", json=good[0], headers=auth), 422, "validation_error")
    assert_resend_error(await client.post("/resend/emails/batch", json=[], headers=auth), 422, "validation_error")


async def test_template_send_with_variables(client: httpx.AsyncClient, world: tuple[Tenant, Tenant, str]) -> None:
    tenant, _, domain = world
    auth = bearer(tenant.live)
    tpl = {"name": "Hello", "subject": "Hi {{ name }}", "html": "<p>Hi {{ name }}</p>", "text": "Hi {{ name }}"}
    created = await client.post("/v1/templates", json={**tpl, "variables": {"name": {"type": "string"}}}, headers=auth)
    assert created.status_code == 201, created.text
    ref = created.json()["id"]
    published = await client.post(f"/v1/templates/{ref}/publish", json={}, headers=auth)
    assert published.status_code == 200, published.text
    body = {"from": f"hi@{domain}", "to": "ada@example.com", "template": {"id": ref, "variables": {"name": "Ada"}}}
    resp = await client.post("/resend/emails", json=body, headers=auth)
    assert resp.status_code == 200, resp.text
    got = (await client.get(f"/resend/emails/{resp.json()['id']}", headers=auth)).json()
    assert (got["subject"], got["html"], got["text"]) == ("Hi Ada", "<p>Hi Ada</p>", "Hi Ada")


async def test_suppressions_add_get_list_remove_and_batch(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant, other = await make_tenant(runtime, "Suppressor"), await make_tenant(runtime, "Neighbour")
    auth = bearer(tenant.live)
    added = await client.post("/resend/suppressions", json={"email": "Ada@Example.com"}, headers=auth)
    assert added.status_code == 200, added.text
    assert added.json() == {"object": "suppression", "id": "ada@example.com"}
    # the same list as /v1 (reason manual), by the normalised address
    v1 = (await client.get("/v1/suppressions?email=ada@example.com", headers=auth)).json()["data"]
    assert [(s["email"], s["reason"]) for s in v1] == [("ada@example.com", "manual")]
    got = (await client.get("/resend/suppressions/ADA@example.com", headers=auth)).json()
    assert (got["object"], got["id"], got["email"], got["origin"], got["source_id"]) == (
        "suppression",
        "ada@example.com",
        "ada@example.com",
        "manual",
        None,
    )
    batch = await client.post(
        "/resend/suppressions/batch/add", json={"emails": ["b@example.com", "c@example.com"]}, headers=auth
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["data"] == [
        {"object": "suppression", "id": "b@example.com"},
        {"object": "suppression", "id": "c@example.com"},
    ]
    # a bad address anywhere in a batch adds none of it
    bad = await client.post("/resend/suppressions/batch/add", json={"emails": ["d@example.com", "nope"]}, headers=auth)
    assert_resend_error(bad, 422, "validation_error")
    assert "emails[1]" in bad.json()["message"]
    assert_resend_error(await client.get("/resend/suppressions/d@example.com", headers=auth), 404, "not_found")

    listed = (await client.get("/resend/suppressions?limit=2", headers=auth)).json()
    assert listed["object"] == "list" and listed["has_more"] is True
    assert [s["id"] for s in listed["data"]] == ["ada@example.com", "b@example.com"]
    assert set(listed["data"][0]) == {"id", "email", "origin", "source_id", "created_at"}
    rest = (await client.get("/resend/suppressions?limit=2&after=b@example.com", headers=auth)).json()
    assert rest["has_more"] is False and [s["id"] for s in rest["data"]] == ["c@example.com"]
    back = (await client.get("/resend/suppressions?limit=1&before=c@example.com", headers=auth)).json()
    assert back["has_more"] is True and [s["id"] for s in back["data"]] == ["b@example.com"]
    none = (await client.get("/resend/suppressions?origin=bounce", headers=auth)).json()
    assert none == {"object": "list", "has_more": False, "data": []}
    bad_origin = await client.get("/resend/suppressions?origin=x", headers=auth)
    assert_resend_error(bad_origin, 422, "validation_error")
    assert bad_origin.json()["message"].startswith("origin must be one of")

    # another tenant sees and removes nothing
    assert (await client.get("/resend/suppressions", headers=bearer(other.live))).json()["data"] == []
    theirs = await client.delete("/resend/suppressions/ada@example.com", headers=bearer(other.live))
    assert_resend_error(theirs, 404, "not_found")

    removed = await client.delete("/resend/suppressions/ada@example.com", headers=auth)
    assert removed.json() == {"object": "suppression", "id": "ada@example.com", "deleted": True}
    gone = await client.post(
        "/resend/suppressions/batch/remove", json={"ids": ["b@example.com", "zed@example.com"]}, headers=auth
    )
    assert gone.json()["data"] == [
        {"object": "suppression", "id": "b@example.com", "deleted": True},
        {"object": "suppression", "id": "zed@example.com", "deleted": False},
    ]
    neither = await client.post("/resend/suppressions/batch/remove", json={}, headers=auth)
    assert_resend_error(neither, 422, "validation_error")
    left = (await client.get("/resend/suppressions", headers=auth)).json()["data"]
    assert [s["id"] for s in left] == ["c@example.com"]


async def test_api_keys_create_list_remove(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant, other = await make_tenant(runtime, "Keyholder"), await make_tenant(runtime, "Stranger")
    auth = bearer(tenant.live)
    made = await client.post("/resend/api-keys", json={"name": "ci", "permission": "sending_access"}, headers=auth)
    assert made.status_code == 200, made.text
    key = made.json()
    assert set(key) == {"id", "token"} and key["token"].startswith("mr_live_")
    # the new key may send and read emails only, as /v1 keys with sending_access
    restricted = await client.get("/resend/api-keys", headers=bearer(key["token"]))
    assert_resend_error(restricted, 401, "restricted_api_key")
    test_made = (await client.post("/resend/api-keys", json={"name": "t"}, headers=bearer(tenant.test))).json()
    assert test_made["token"].startswith("mr_test_")  # a test key makes test keys

    listed = (await client.get("/resend/api-keys", headers=auth)).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [k["id"] for k in listed["data"]][:2] == [test_made["id"], key["id"]]  # newest first
    assert set(listed["data"][0]) == {"id", "name", "created_at", "last_used_at"}
    one = (await client.get("/resend/api-keys?limit=1", headers=auth)).json()
    assert one["has_more"] is True and [k["id"] for k in one["data"]] == [test_made["id"]]
    bad = await client.post("/resend/api-keys", json={"name": "x", "permission": "root"}, headers=auth)
    assert_resend_error(bad, 422, "validation_error")
    rename = await client.patch(f"/resend/api-keys/{key['id']}", json={"name": "y"}, headers=auth)
    assert_resend_error(rename, 404, "not_found")

    assert_resend_error(
        await client.delete(f"/resend/api-keys/{key['id']}", headers=bearer(other.live)), 404, "not_found"
    )
    removed = await client.delete(f"/resend/api-keys/{key['id']}", headers=auth)
    assert removed.json() == {"object": "api_key", "id": key["id"], "deleted": True}
    assert_resend_error(await client.get("/resend/emails", headers=bearer(key["token"])), 403, "invalid_api_key")
    after = (await client.get("/resend/api-keys", headers=auth)).json()["data"]
    assert key["id"] not in [k["id"] for k in after]
