"""POST /v1/emails/batch through the real app on real Postgres: each item validated on its own (its
error names its field within the item), per-item from-domain refusals, the whole batch refused for
the tenant's status or a bad `emails` array, all accepted items written by one statement, and an
Idempotency-Key over the whole batch."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from api_testkit import (
    OPERATOR_TOKEN,
    Tenant,
    add_domain,
    assert_error,
    bearer,
    make_tenant,
    table_counts,
    unique_domain,
)
from mailroom_kit.runtime import Runtime
from psycopg import AsyncCursor

SEND = {"from": "a@anything.test", "to": "b@example.test", "subject": "hi", "text": "t"}


async def tenant_counts(rt: Runtime, tenant: Tenant) -> tuple[int, int, int, int]:
    """The tenant's emails, recipients, timeline entries and outbox rows."""
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM emails WHERE tenant_id = %(t)s) AS emails,"
            " (SELECT count(*) FROM email_recipients r JOIN emails m ON m.id = r.email_id"
            "   WHERE m.tenant_id = %(t)s) AS recipients,"
            " (SELECT count(*) FROM email_events e JOIN emails m ON m.id = e.email_id"
            "   WHERE m.tenant_id = %(t)s) AS timeline,"
            " (SELECT count(*) FROM outbox o JOIN email_events e ON e.id = o.event_id"
            "   JOIN emails m ON m.id = e.email_id WHERE m.tenant_id = %(t)s) AS outbox",
            {"t": tenant.id},
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["emails"]), int(row["recipients"]), int(row["timeline"]), int(row["outbox"])


async def test_each_item_is_accepted_or_refused_on_its_own(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    verified, unverified = unique_domain(), unique_domain()
    await add_domain(runtime, tenant.id, verified)
    ok = {**SEND, "from": f"Acme <hi@{verified}>", "cc": ["c@example.test"]}
    items = [
        ok,
        {**ok, "to": ["x@example.test", "not an address"]},
        {**ok, "subject": "two\nlines"},
        {**ok, "colour": "blue"},
        {**ok, "tags": {"team": "a b"}},
        {**ok, "from": f"hi@{unverified}"},
        7,
        {**ok, "template": {"id": "tpl_1"}},
        {**{k: v for k, v in ok.items() if k != "text"}, "html": "\u00e9" * 3_000_000},  # 16 MB built (html + text)
        {k: v for k, v in ok.items() if k != "to"},
        {**ok, "subject": "last", "to": "z@example.test"},
    ]
    resp = await client.post(
        "/v1/emails/batch",
        content=json.dumps({"emails": items}, ensure_ascii=False).encode(),
        headers={**bearer(tenant.live), "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["queued"], body["failed"]) == (2, 9)
    data = body["data"]
    assert [d["index"] for d in data] == list(range(len(items)))
    refused = {d["index"]: (d["error"], d["param"]) for d in data if "error" in d}
    assert refused == {
        1: ("validation_error", "to[1]"),
        2: ("validation_error", "subject"),
        3: ("validation_error", "colour"),
        4: ("validation_error", "tags.team"),
        5: ("domain_not_verified", None),
        6: ("validation_error", None),
        7: ("not_found", "template.id"),
        8: ("payload_too_large", None),
        9: ("validation_error", "to"),
    }
    assert all(d["message"] and set(d) == {"index", "error", "message", "param"} for d in data if "error" in d)
    assert unverified in data[5]["message"] and "not found" in data[7]["message"]
    accepted = [d for d in data if "id" in d]
    assert [(d["index"], d["status"], set(d)) for d in accepted] == [
        (0, "queued", {"index", "id", "status"}),
        (10, "queued", {"index", "id", "status"}),
    ]
    assert await tenant_counts(runtime, tenant) == (2, 4, 2, 2)
    listed = await client.get("/v1/emails", headers=bearer(tenant.live))
    assert {e["id"] for e in listed.json()["data"]} == {d["id"] for d in accepted}
    last = await client.get(f"/v1/emails/{data[10]['id']}", headers=bearer(tenant.live))
    assert last.json()["subject"] == "last" and last.json()["from"] == f"Acme <hi@{verified}>"
    assert [e["type"] for e in last.json()["events"]] == ["queued"]


async def test_a_batch_that_accepts_nothing_writes_nothing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    items = [{**SEND, "to": "nope"}, {**SEND, "from": f"a@{unique_domain()}"}]
    before = await table_counts(runtime, "emails", "outbox", "idempotency_keys")
    resp = await client.post(
        "/v1/emails/batch", json={"emails": items}, headers={**bearer(tenant.live), "Idempotency-Key": "nothing"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["queued"] == 0 and resp.json()["failed"] == 2
    assert [d["error"] for d in resp.json()["data"]] == ["validation_error", "domain_not_verified"]
    assert await table_counts(runtime, "emails", "outbox", "idempotency_keys") == before


@pytest.mark.parametrize("size", [0, 101])
async def test_an_empty_or_oversized_batch_is_refused(client: httpx.AsyncClient, runtime: Runtime, size: int) -> None:
    tenant = await make_tenant(runtime)
    resp = await client.post("/v1/emails/batch", json={"emails": [SEND] * size}, headers=bearer(tenant.test))
    assert_error(resp, 422, "validation_error", "emails")
    for bad in ({}, {"emails": SEND}, {"emails": [SEND], "extra": 1}):
        resp = await client.post("/v1/emails/batch", json=bad, headers=bearer(tenant.test))
        assert resp.status_code == 422, resp.text
    assert await tenant_counts(runtime, tenant) == (0, 0, 0, 0)


async def test_a_hundred_items_are_one_statement(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    assert (await client.get("/v1/emails", headers=bearer(tenant.live))).status_code == 200  # key now cached
    statements: list[str] = []
    execute = AsyncCursor.execute

    async def counted(self: AsyncCursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        text = str(query)
        # Not the relay wake's (its own connection, after the commit), nor a key lookup (the
        # cache may have expired under a slow machine).
        # Nor the rate limiter's lease (issue 23: a batch costs its items; its own autocommit
        # statement on an UNLOGGED table, apart from the accept).
        if "pg_notify" not in text and "FROM api_keys" not in text and "rate_buckets" not in text:
            statements.append(text.split()[0])
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(AsyncCursor, "execute", counted)
    item = {**SEND, "from": f"a@{domain}", "to": ["r@example.test", "x@example.test"]}
    resp = await client.post(
        "/v1/emails/batch",
        json={"emails": [{**item, "to": [f"r{i}@example.test", "x@example.test"]} for i in range(100)]},
        headers=bearer(tenant.live),
    )
    monkeypatch.undo()
    assert resp.status_code == 200 and resp.json()["queued"] == 100
    ids = [d["id"] for d in resp.json()["data"]]
    assert ids == sorted(ids)  # in the order given: the log lists them newest (last) first
    # The from-domains' read, then one statement for the 100 emails, 200 recipients, timeline and outbox.
    assert statements == ["SELECT", "WITH"]
    assert await tenant_counts(runtime, tenant) == (100, 200, 100, 100)
    emails = await client.get("/v1/emails?limit=100", headers=bearer(tenant.live))
    assert [e["id"] for e in emails.json()["data"]] == ids[::-1]
    one = await client.get(f"/v1/emails/{resp.json()['data'][42]['id']}", headers=bearer(tenant.live))
    assert [r["email"] for r in one.json()["recipients"]] == ["r42@example.test", "x@example.test"]
    async with runtime.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(DISTINCT o.event_id) AS n FROM outbox o JOIN email_events e ON e.id = o.event_id"
            " JOIN emails m ON m.id = e.email_id WHERE m.tenant_id = %s",
            (tenant.id,),
        )
        assert (await cur.fetchone() or {})["n"] == 100


async def test_a_paused_tenant_is_refused_as_a_whole(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    paused = await client.patch(
        f"/admin/v1/tenants/{tenant.id}", json={"status": "paused"}, headers=bearer(OPERATOR_TOKEN)
    )
    assert paused.status_code == 200, paused.text
    resp = await client.post("/v1/emails/batch", json={"emails": [SEND]}, headers=bearer(tenant.test))
    assert_error(resp, 403, "tenant_paused", None)
    assert await tenant_counts(runtime, tenant) == (0, 0, 0, 0)


async def test_a_key_restricted_to_a_domain_refuses_other_items(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    mine, other = unique_domain(), unique_domain()
    domain_id = await add_domain(runtime, tenant.id, mine)
    await add_domain(runtime, tenant.id, other)
    created = await client.post(
        "/v1/api-keys",
        json={"name": "one domain", "mode": "live", "permission": "sending_access", "domain_id": domain_id},
        headers=bearer(tenant.live),
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    items = [{**SEND, "from": f"a@{mine}"}, {**SEND, "from": f"a@{other}"}]
    resp = await client.post("/v1/emails/batch", json={"emails": items}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    assert [d.get("error", d.get("status")) for d in resp.json()["data"]] == ["queued", "from_domain_not_allowed"]


async def test_a_batch_under_a_key_is_replayed(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    body = {"emails": [SEND, {**SEND, "to": "bad"}, {**SEND, "subject": "second"}]}
    headers = {**bearer(tenant.test), "Idempotency-Key": "batch-1"}
    first = await client.post("/v1/emails/batch", json=body, headers=headers)
    assert first.status_code == 200 and first.json()["queued"] == 2
    again = await client.post("/v1/emails/batch", json=body, headers=headers)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await tenant_counts(runtime, tenant) == (2, 2, 2, 2)
    other = await client.post("/v1/emails/batch", json={"emails": [SEND]}, headers=headers)
    assert_error(other, 409, "idempotency_conflict", "Idempotency-Key")
    single = await client.post("/v1/emails", json=SEND, headers=headers)
    assert_error(single, 409, "idempotency_conflict", "Idempotency-Key")
    assert await tenant_counts(runtime, tenant) == (2, 2, 2, 2)
