"""Idempotency-Key on POST /v1/emails and /v1/emails/batch, through the real app on real Postgres:
replay (same status, same bytes, `Idempotent-Replayed: true`), conflict (another body, another
endpoint), malformed keys (422, nothing written), a refused request records no key, tenant and mode
scopes, expiry (never replayed after it; purged, then reusable)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import msgspec
import pytest
from api_testkit import (
    Tenant,
    add_domain,
    assert_error,
    bearer,
    make_tenant,
    serve,
    unique_domain,
)
from mailroom_api.app import create_app
from mailroom_api.emails.idempotency import purge_expired, purge_worker
from mailroom_kit.runtime import Runtime

SEND = {"from": "a@anything.test", "to": "b@example.test", "subject": "hi", "text": "t"}


def keyed(token: str, key: str) -> dict[str, str]:
    return {**bearer(token), "Idempotency-Key": key}


async def counts(rt: Runtime, tenant: Tenant) -> tuple[int, int, int]:
    """The tenant's emails, their outbox rows (by event id: the queued timeline entries' ids), and keys."""
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM emails WHERE tenant_id = %(t)s) AS emails,"
            " (SELECT count(*) FROM outbox o JOIN email_events e ON e.id = o.event_id"
            "   JOIN emails m ON m.id = e.email_id WHERE m.tenant_id = %(t)s) AS outbox,"
            " (SELECT count(*) FROM idempotency_keys WHERE tenant_id = %(t)s) AS keys",
            {"t": tenant.id},
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row["emails"]), int(row["outbox"]), int(row["keys"])


async def test_same_key_and_body_replay_the_first_answer(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    first = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "order-1"))
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "order-1"))
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # byte for byte, created_at included
    assert again.headers["x-request-id"] != first.headers["x-request-id"]  # a new request all the same
    assert await counts(runtime, tenant) == (1, 1, 1)
    got = await client.get(f"/v1/emails/{first.json()['id']}", headers=bearer(tenant.test))
    assert got.status_code == 200


async def test_another_body_or_endpoint_is_a_conflict(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    assert (await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "k"))).status_code == 202
    other = await client.post("/v1/emails", json={**SEND, "subject": "other"}, headers=keyed(tenant.test, "k"))
    assert_error(other, 409, "idempotency_conflict", "Idempotency-Key")
    # The fingerprint is the body as received: the same JSON spelt otherwise is another body.
    spaced = await client.post(
        "/v1/emails",
        content=json.dumps(SEND, indent=2),
        headers={**keyed(tenant.test, "k"), "Content-Type": "application/json"},
    )
    assert_error(spaced, 409, "idempotency_conflict", "Idempotency-Key")
    batch = await client.post("/v1/emails/batch", json={"emails": [SEND]}, headers=keyed(tenant.test, "k"))
    assert_error(batch, 409, "idempotency_conflict", "Idempotency-Key")
    assert await counts(runtime, tenant) == (1, 1, 1)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("x" * 257, "longer than 256"),
        ("has space", "visible ASCII"),
        ("tab\there", "visible ASCII"),
        ("caf\u00e9".encode(), "visible ASCII"),  # UTF-8 on the wire
        ("", "empty"),
    ],
)
async def test_a_malformed_key_is_refused_and_nothing_is_written(
    client: httpx.AsyncClient, runtime: Runtime, key: str | bytes, why: str
) -> None:
    tenant = await make_tenant(runtime)
    for path, body in (("/v1/emails", SEND), ("/v1/emails/batch", {"emails": [SEND]})):
        raw = key if isinstance(key, bytes) else key.encode()
        headers = [(b"Authorization", f"Bearer {tenant.test}".encode()), (b"Idempotency-Key", raw)]
        resp = await client.post(path, json=body, headers=headers)
        assert_error(resp, 422, "validation_error", "Idempotency-Key")
        assert why in resp.json()["message"]
    assert await counts(runtime, tenant) == (0, 0, 0)
    longest = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "~" * 256))
    assert longest.status_code == 202


async def test_a_key_given_twice_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    headers = [("Authorization", f"Bearer {tenant.test}"), ("Idempotency-Key", "a"), ("Idempotency-Key", "a")]
    resp = await client.post("/v1/emails", json=SEND, headers=headers)
    assert_error(resp, 422, "validation_error", "Idempotency-Key")
    assert await counts(runtime, tenant) == (0, 0, 0)


async def test_a_refused_request_records_no_key_so_a_corrected_retry_may_reuse_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    unverified = {**SEND, "from": f"a@{domain}"}
    refused = await client.post("/v1/emails", json=unverified, headers=keyed(tenant.live, "retry-me"))
    assert_error(refused, 403, "domain_not_verified", None)
    invalid = await client.post("/v1/emails", json={**SEND, "to": "nope"}, headers=keyed(tenant.live, "retry-me"))
    assert_error(invalid, 422, "validation_error", "to")
    assert await counts(runtime, tenant) == (0, 0, 0)
    await add_domain(runtime, tenant.id, domain)
    ok = await client.post("/v1/emails", json=unverified, headers=keyed(tenant.live, "retry-me"))
    assert ok.status_code == 202, ok.text
    assert await counts(runtime, tenant) == (1, 1, 1)


async def test_a_replay_does_not_depend_on_the_domain_still_being_verified(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    domain_id = await add_domain(runtime, tenant.id, domain)
    body = {**SEND, "from": f"a@{domain}"}
    first = await client.post("/v1/emails", json=body, headers=keyed(tenant.live, "before"))
    batch = await client.post("/v1/emails/batch", json={"emails": [body]}, headers=keyed(tenant.live, "before-b"))
    assert first.status_code == 202 and batch.json()["queued"] == 1
    async with runtime.pool.connection() as conn:
        await conn.execute("UPDATE domains SET status = 'temporary_failure' WHERE id = %s", (domain_id,))
    again = await client.post("/v1/emails", json=body, headers=keyed(tenant.live, "before"))
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    batch_again = await client.post("/v1/emails/batch", json={"emails": [body]}, headers=keyed(tenant.live, "before-b"))
    assert batch_again.headers["idempotent-replayed"] == "true" and batch_again.content == batch.content
    fresh = await client.post("/v1/emails", json=body, headers=keyed(tenant.live, "after"))
    assert_error(fresh, 403, "domain_not_verified", None)
    assert await counts(runtime, tenant) == (2, 2, 2)


async def test_keys_are_scoped_to_the_tenant_and_the_mode(client: httpx.AsyncClient, runtime: Runtime) -> None:
    a, b = await make_tenant(runtime, "A"), await make_tenant(runtime, "B")
    domain = unique_domain()
    await add_domain(runtime, a.id, domain)
    body = {**SEND, "from": f"a@{domain}"}
    first = await client.post("/v1/emails", json=body, headers=keyed(a.test, "shared"))
    other_tenant = await client.post("/v1/emails", json=body, headers=keyed(b.test, "shared"))
    other_mode = await client.post("/v1/emails", json=body, headers=keyed(a.live, "shared"))
    for resp in (first, other_tenant, other_mode):
        assert resp.status_code == 202, resp.text
        assert "idempotent-replayed" not in resp.headers
    assert len({first.json()["id"], other_tenant.json()["id"], other_mode.json()["id"]}) == 3
    assert (await counts(runtime, a))[0] == 2 and (await counts(runtime, b))[0] == 1
    # B's replay is B's own answer, never A's.
    replay = await client.post("/v1/emails", json=body, headers=keyed(b.test, "shared"))
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == other_tenant.content


async def test_sending_keys_of_one_tenant_share_its_keys(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    await add_domain(runtime, tenant.id, domain)
    body = {**SEND, "from": f"a@{domain}"}
    first = await client.post("/v1/emails", json=body, headers=keyed(tenant.live, "same-tenant"))
    second = await client.post("/v1/emails", json=body, headers=keyed(tenant.sending, "same-tenant"))
    assert second.headers["idempotent-replayed"] == "true" and second.content == first.content


@pytest.fixture(scope="module")
async def short_lived(runtime: Runtime) -> Runtime:
    """The same database and NATS, with keys kept one second and purged every 0.1 s."""
    settings = msgspec.structs.replace(
        runtime.settings, idempotency_ttl_seconds=1, idempotency_purge_interval_seconds=0.1
    )
    return dataclasses.replace(runtime, settings=settings, stop=asyncio.Event())


async def test_an_expired_key_is_never_replayed_then_purged_and_reusable(short_lived: Runtime) -> None:
    tenant = await make_tenant(short_lived)
    async with serve(create_app(short_lived)) as client:
        first = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "brief"))
        assert first.status_code == 202
        await asyncio.sleep(1.1)
        # Expired but not purged yet: a new email, and the record is taken over.
        second = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "brief"))
        assert second.status_code == 202 and "idempotent-replayed" not in second.headers
        assert second.json()["id"] != first.json()["id"]
        assert await counts(short_lived, tenant) == (2, 2, 1)
        await asyncio.sleep(1.1)
        assert await purge_expired(short_lived) >= 1
        assert (await counts(short_lived, tenant))[2] == 0
        third = await client.post("/v1/emails", json={**SEND, "subject": "new"}, headers=keyed(tenant.test, "brief"))
        assert third.status_code == 202 and "idempotent-replayed" not in third.headers
        assert await counts(short_lived, tenant) == (3, 3, 1)


async def test_the_purge_worker_deletes_expired_keys_in_batches(short_lived: Runtime) -> None:
    tenant = await make_tenant(short_lived)
    async with serve(create_app(short_lived)) as client:
        for n in range(5):
            resp = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, f"k{n}"))
            assert resp.status_code == 202
    await asyncio.sleep(1.1)
    assert await purge_expired(short_lived, batch=2) >= 5  # three statements for these five
    async with serve(create_app(short_lived)) as client:
        resp = await client.post("/v1/emails", json=SEND, headers=keyed(tenant.test, "kept"))
        assert resp.status_code == 202
    await asyncio.sleep(1.1)
    assert (await counts(short_lived, tenant))[2] == 1
    task = asyncio.create_task(purge_worker(short_lived))
    try:
        for _ in range(50):
            if (await counts(short_lived, tenant))[2] == 0:
                break
            await asyncio.sleep(0.1)
        assert (await counts(short_lived, tenant))[2] == 0
    finally:
        short_lived.stop.set()
        await asyncio.wait_for(task, 5)
