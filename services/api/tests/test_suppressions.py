"""The suppression list API (`/v1/suppressions`) through the real app over real HTTP and real
Postgres: add by hand (idempotent), look up, filter and page, remove; tenants and modes apart; bad
input is a 422 naming the field and writes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from api_testkit import Tenant, assert_error, bearer, make_tenant, table_counts
from mailroom_api.unsubscribe import repository as unsubscribe_repo
from mailroom_contracts import decode
from mailroom_contracts.events import EmailQueued, EmailSuppressed, SuppressedRecipient
from mailroom_contracts.subjects import EMAIL_QUEUED, EMAIL_SUPPRESSED
from mailroom_kit.runtime import Runtime


@pytest.fixture(scope="module")
async def tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime, "Suppressor")


async def _list(client: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    resp = await client.get("/v1/suppressions", params=params, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_add_is_normalised_idempotent_and_keeps_the_first_entry(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    resp = await client.post("/v1/suppressions", json={"email": "Ann <Ann@Example.COM>"}, headers=bearer(tenant.live))
    assert resp.status_code == 201, resp.text
    first = resp.json()
    assert first["email"] == "ann@example.com"
    assert (first["reason"], first["source_email_id"]) == ("manual", None)

    again = await client.post(
        "/v1/suppressions", json={"email": "ann@example.com", "reason": "manual"}, headers=bearer(tenant.live)
    )
    assert again.status_code == 201 and again.json() == first
    found = await _list(client, tenant.live, email="ANN@example.com")
    assert found == {"data": [first], "next_cursor": None}

    # An entry recorded another way (one-click unsubscribe) keeps its reason when added by hand.
    async with runtime.pool.connection() as conn, conn.transaction():
        await unsubscribe_repo.add_suppression(
            conn, tenant_id=tenant.id, mode="live", email="bob@example.com", reason="unsubscribe", source_email_id=None
        )
    bob = await client.post("/v1/suppressions", json={"email": "bob@example.com"}, headers=bearer(tenant.live))
    assert bob.status_code == 201 and bob.json()["reason"] == "unsubscribe"
    unsubscribed = await _list(client, tenant.live, reason="unsubscribe")
    assert [e["email"] for e in unsubscribed["data"]] == ["bob@example.com"]


async def test_tenants_and_modes_are_apart(client: httpx.AsyncClient, runtime: Runtime) -> None:
    a, b = await make_tenant(runtime, "A"), await make_tenant(runtime, "B")
    resp = await client.post("/v1/suppressions", json={"email": "x@example.com"}, headers=bearer(a.live))
    assert resp.status_code == 201
    assert (await _list(client, a.test))["data"] == []  # the test key has its own list
    assert (await _list(client, b.live))["data"] == []
    assert_error(await client.delete("/v1/suppressions/x@example.com", headers=bearer(b.live)), 404, "not_found", None)
    assert_error(await client.delete("/v1/suppressions/x@example.com", headers=bearer(a.test)), 404, "not_found", None)
    # A sending-access key cannot manage the list.
    forbidden = await client.get("/v1/suppressions", headers=bearer(a.sending))
    assert forbidden.status_code == 403
    assert [e["email"] for e in (await _list(client, a.live))["data"]] == ["x@example.com"]


async def test_delete_removes_once(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await make_tenant(runtime, "Deleter")
    await client.post("/v1/suppressions", json={"email": "gone+tag@example.com"}, headers=bearer(t.live))
    resp = await client.delete("/v1/suppressions/Gone%2Btag%40Example.com", headers=bearer(t.live))
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    assert (await _list(client, t.live))["data"] == []
    assert_error(
        await client.delete("/v1/suppressions/gone+tag@example.com", headers=bearer(t.live)), 404, "not_found", None
    )


async def test_pages_by_address(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await make_tenant(runtime, "Pager")
    addresses = [f"user{i}@example.com" for i in range(5)]
    for address in reversed(addresses):
        assert (
            await client.post("/v1/suppressions", json={"email": address}, headers=bearer(t.live))
        ).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        body = await _list(client, t.live, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [e["email"] for e in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (addresses, 3)
    assert (await _list(client, t.live, reason="bounce"))["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "email"),
        ({"email": "not an address"}, "email"),
        ({"email": ""}, "email"),
        ({"email": 7}, "email"),
        ({"email": "a@example.com", "reason": "bounce"}, "reason"),
        ({"email": "a@example.com", "extra": 1}, "extra"),
    ],
)
async def test_bad_bodies_are_422_and_write_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, body: dict[str, Any], param: str
) -> None:
    before = await table_counts(runtime, "suppressions")
    resp = await client.post("/v1/suppressions", json=body, headers=bearer(tenant.live))
    assert_error(resp, 422, "validation_error", param)
    assert await table_counts(runtime, "suppressions") == before


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"reason": "soft"}, "reason"),
        ({"cursor": "!!!"}, "cursor"),
        ({"cursor": "QUJD"}, "cursor"),  # base64 of "ABC": not an address of the list
        ({"email": "nope"}, "email"),
    ],
)
async def test_bad_queries_are_422(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, Any], param: str
) -> None:
    resp = await client.get("/v1/suppressions", params=params, headers=bearer(tenant.live))
    assert_error(resp, 422, "validation_error", param)


async def test_delete_of_a_non_address_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert_error(
        await client.delete("/v1/suppressions/not-an-address", headers=bearer(tenant.live)),
        422,
        "validation_error",
        "email",
    )


async def test_without_a_key_is_401(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/suppressions"), 401, "missing_api_key", None)


# --------------------------------------------------------------------------- send-time filtering


async def _queued(rt: Runtime, email_id: str) -> EmailQueued:
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox WHERE convert_from(payload, 'UTF8')::jsonb ->> 'email_id' = %s"
            " AND subject = %s",
            (email_id, EMAIL_QUEUED),
        )
        row = await cur.fetchone()
    assert row is not None
    return decode(bytes(row["payload"]), EmailQueued)


async def _suppressed_events(rt: Runtime, email_id: str) -> list[EmailSuppressed]:
    """The EmailSuppressed rows the accept of `email_id` wrote to the outbox (issue 22)."""
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox WHERE convert_from(payload, 'UTF8')::jsonb ->> 'email_id' = %s"
            " AND subject = %s",
            (email_id, EMAIL_SUPPRESSED),
        )
        return [decode(bytes(row["payload"]), EmailSuppressed) for row in await cur.fetchall()]


async def _recipients(rt: Runtime, email_id: str) -> list[tuple[str, str, str]]:
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT address, type, status FROM email_recipients WHERE email_id = %s ORDER BY position", (email_id,)
        )
        return [(r["address"], r["type"], r["status"]) for r in await cur.fetchall()]


def _mail(to: list[str], **extra: Any) -> dict[str, Any]:
    return {"from": "app@mail.acme.test", "to": to, "subject": "Hi", "text": "hello", **extra}


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_suppressed_recipients_are_dropped_and_all_suppressed_is_403(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await make_tenant(runtime, "Filter")
    # Before the test key is first used (so it is cached knowing its list is not empty).
    async with runtime.pool.connection() as conn, conn.transaction():
        await unsubscribe_repo.add_suppression(
            conn, tenant_id=t.id, mode="test", email="gone@example.com", reason="bounce", source_email_id=None
        )
    resp = await client.post(
        "/v1/emails",
        json=_mail(["Ok@Example.com", "Gone@Example.com"], cc=["c@example.com"], bcc=["gone@example.com"]),
        headers=bearer(t.test),
    )
    assert resp.status_code == 202, resp.text
    email_id = resp.json()["id"]
    assert await _recipients(runtime, email_id) == [
        ("Ok@example.com", "to", "queued"),
        ("Gone@example.com", "to", "suppressed"),
        ("c@example.com", "cc", "queued"),
        ("gone@example.com", "bcc", "suppressed"),
    ]
    event = await _queued(runtime, email_id)  # what the sender gets: no suppressed recipient
    assert ([a.email for a in event.to], [a.email for a in event.cc], event.bcc) == (
        ["Ok@example.com"],
        ["c@example.com"],
        [],
    )
    detail = (await client.get(f"/v1/emails/{email_id}", headers=bearer(t.test))).json()
    assert [r["status"] for r in detail["recipients"]] == ["queued", "suppressed", "queued", "suppressed"]
    # The same statement wrote one EmailSuppressed naming the dropped address once, with its reason.
    [dropped] = await _suppressed_events(runtime, email_id)
    assert (dropped.tenant_id, dropped.mode, dropped.recipients) == (
        t.id,
        "test",
        [SuppressedRecipient(email="gone@example.com", reason="bounce")],
    )

    # Every recipient suppressed: 403, nothing written (also scheduled, and under an Idempotency-Key).
    before = await table_counts(runtime, "emails", "email_recipients", "email_events", "outbox", "outbox_scheduled")
    for extra, headers in (
        ({}, {}),
        ({"scheduled_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}, {}),
        ({}, {"Idempotency-Key": "k-all-suppressed"}),
    ):
        refused = await client.post(
            "/v1/emails", json=_mail(["GONE@example.com"], **extra), headers={**bearer(t.test), **headers}
        )
        assert_error(refused, 403, "recipient_suppressed", None)
    assert (
        await table_counts(runtime, "emails", "email_recipients", "email_events", "outbox", "outbox_scheduled")
        == before
    )
    # The live list is another one: the live key is not affected by the test list.
    assert (await _list(client, t.live))["data"] == []

    # Removed from the list: the send goes out (the key may still be cached as having a list).
    assert (await client.delete("/v1/suppressions/gone@example.com", headers=bearer(t.test))).status_code == 204
    again = await client.post("/v1/emails", json=_mail(["gone@example.com"]), headers=bearer(t.test))
    assert again.status_code == 202, again.text
    assert await _recipients(runtime, again.json()["id"]) == [("gone@example.com", "to", "queued")]
    assert [a.email for a in (await _queued(runtime, again.json()["id"])).to] == ["gone@example.com"]
    assert await _suppressed_events(runtime, again.json()["id"]) == []  # nobody dropped: no event


async def test_a_cached_key_learns_that_its_list_is_no_longer_empty(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await make_tenant(runtime, "Learner")
    first = await client.post("/v1/emails", json=_mail(["x@example.com"]), headers=bearer(t.test))
    assert first.status_code == 202  # the key is cached now, its list empty
    added = await client.post("/v1/suppressions", json={"email": "x@example.com"}, headers=bearer(t.test))
    assert added.status_code == 201

    async def refused() -> bool:  # the first entry is NOTIFYed to every API process
        resp = await client.post("/v1/emails", json=_mail(["x@example.com"]), headers=bearer(t.test))
        return resp.status_code == 403 and resp.json()["error"] == "recipient_suppressed"

    await _eventually(refused)


async def test_batch_items_are_filtered_each_on_its_own(client: httpx.AsyncClient, runtime: Runtime) -> None:
    t = await make_tenant(runtime, "Batcher")
    async with runtime.pool.connection() as conn, conn.transaction():
        for address in ("b1@example.com", "b2@example.com"):
            await unsubscribe_repo.add_suppression(
                conn, tenant_id=t.id, mode="test", email=address, reason="complaint", source_email_id=None
            )
    resp = await client.post(
        "/v1/emails/batch",
        json={
            "emails": [
                _mail(["b1@example.com"]),
                _mail(["ok@example.com", "B2@example.com"]),
                _mail(
                    ["b1@example.com", "b2@example.com"],
                    scheduled_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
                ),
                _mail(["ok2@example.com"]),
            ]
        },
        headers=bearer(t.test),
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["queued"], body["failed"]) == (2, 2)
    items = body["data"]
    assert [item.get("error") for item in items] == ["recipient_suppressed", None, "recipient_suppressed", None]
    partial = items[1]["id"]
    assert await _recipients(runtime, partial) == [
        ("ok@example.com", "to", "queued"),
        ("B2@example.com", "to", "suppressed"),
    ]
    assert [a.email for a in (await _queued(runtime, partial)).to] == ["ok@example.com"]
    [dropped] = await _suppressed_events(runtime, partial)
    assert dropped.recipients == [SuppressedRecipient(email="b2@example.com", reason="complaint")]
    assert await _recipients(runtime, items[3]["id"]) == [("ok2@example.com", "to", "queued")]
    assert await _suppressed_events(runtime, items[3]["id"]) == []
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM emails WHERE tenant_id = %s", (t.id,))
        row = await cur.fetchone()
    assert row is not None and row["n"] == 2  # the refused items wrote nothing


async def test_a_key_answered_before_replays_after_its_recipient_is_suppressed(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await make_tenant(runtime, "Replayer")
    async with runtime.pool.connection() as conn, conn.transaction():  # a non-empty list: the check runs
        await unsubscribe_repo.add_suppression(
            conn, tenant_id=t.id, mode="test", email="other@example.com", reason="manual", source_email_id=None
        )
    headers = {**bearer(t.test), "Idempotency-Key": "replay-me"}
    first = await client.post("/v1/emails", json=_mail(["late@example.com"]), headers=headers)
    assert first.status_code == 202, first.text
    assert (
        await client.post("/v1/suppressions", json={"email": "late@example.com"}, headers=bearer(t.test))
    ).status_code == 201
    again = await client.post("/v1/emails", json=_mail(["late@example.com"]), headers=headers)
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    fresh = await client.post(
        "/v1/emails", json=_mail(["late@example.com"]), headers={**bearer(t.test), "Idempotency-Key": "new-key"}
    )
    assert_error(fresh, 403, "recipient_suppressed", None)


async def test_a_scheduled_send_with_dropped_recipients_publishes_its_email_suppressed_at_once(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    t = await make_tenant(runtime, "Scheduler")
    async with runtime.pool.connection() as conn, conn.transaction():
        await unsubscribe_repo.add_suppression(
            conn, tenant_id=t.id, mode="test", email="out@example.com", reason="unsubscribe", source_email_id=None
        )
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for headers in ({}, {"Idempotency-Key": "sched-suppressed"}):
        resp = await client.post(
            "/v1/emails",
            json=_mail(["in@example.com", "out@example.com"], scheduled_at=later),
            headers={**bearer(t.test), **headers},
        )
        assert resp.status_code == 202, resp.text
        [dropped] = await _suppressed_events(runtime, resp.json()["id"])  # not held until scheduled_at
        assert dropped.recipients == [SuppressedRecipient(email="out@example.com", reason="unsubscribe")]
