"""One Idempotency-Key, 20 identical concurrent requests, two API processes on one port
(MAILROOM_API_PROCESSES=2) and one database: exactly one email and one queued event; every other
answer is the replay of that 202 or `409 idempotency_in_progress`; another body is 409
`idempotency_conflict`. The same for a batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Stack
from support import FRESH_CONNECTIONS, Tenant, api_processes_stack, create_tenant, requests_per_process

PROCESSES = 2
CONCURRENT = 20
SEND = {"from": "a@anything.test", "to": "b@example.test", "subject": "once", "text": "only once"}


@pytest.fixture(scope="module")
def api_stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    yield from api_processes_stack(tmp_path_factory.mktemp("idem"), postgres, PROCESSES)


async def burst(stack: Stack, tenant: Tenant, path: str, body: object, key: str) -> list[httpx.Response]:
    headers = {**tenant.headers("test"), "Idempotency-Key": key}
    async with httpx.AsyncClient(base_url=stack.url("api"), limits=FRESH_CONNECTIONS, timeout=30) as client:
        return list(await asyncio.gather(*(client.post(path, json=body, headers=headers) for _ in range(CONCURRENT))))


def db_counts(stack: Stack, tenant: Tenant) -> tuple[int, int]:
    """The tenant's emails and their `queued` timeline entries (one per outbox event, same id)."""
    with psycopg.connect(stack.db_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM api.emails WHERE tenant_id = %(t)s),"
            " (SELECT count(*) FROM api.email_events e JOIN api.emails m ON m.id = e.email_id"
            "  WHERE m.tenant_id = %(t)s AND e.type = 'queued')",
            {"t": tenant.id},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def check_one_answer(answers: list[httpx.Response], status: int) -> httpx.Response:
    fresh = [r for r in answers if r.status_code == status and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1, [(r.status_code, r.text) for r in answers]
    for r in answers:
        if r is fresh[0]:
            continue
        if r.status_code == 409:
            assert r.json()["error"] == "idempotency_in_progress", r.text
        else:
            assert r.status_code == status and r.headers["idempotent-replayed"] == "true", r.text
            assert r.content == fresh[0].content
    return fresh[0]


def test_twenty_concurrent_requests_with_one_key_make_one_email(api_stack: Stack) -> None:
    tenant = create_tenant(api_stack)  # 3 POSTs: the tenant and its two keys
    answers = asyncio.run(burst(api_stack, tenant, "/v1/emails", SEND, "burst-1"))
    first = check_one_answer(answers, 202)
    assert db_counts(api_stack, tenant) == (1, 1)
    # 23 POSTs in all: both copies answered some.
    counts = requests_per_process(api_stack, 3 + CONCURRENT)
    assert len(counts) == PROCESSES and sum(counts) == 3 + CONCURRENT and min(counts) > 0, counts

    conflict = asyncio.run(burst(api_stack, tenant, "/v1/emails", {**SEND, "subject": "other"}, "burst-1"))
    assert {(r.status_code, r.json()["error"]) for r in conflict} == {(409, "idempotency_conflict")}
    assert db_counts(api_stack, tenant) == (1, 1)
    with httpx.Client(base_url=api_stack.url("api"), headers=tenant.headers("test"), timeout=10) as client:
        listed = client.get("/v1/emails").json()["data"]
    assert [e["id"] for e in listed] == [first.json()["id"]]


def test_twenty_concurrent_batches_with_one_key_make_one_batch(api_stack: Stack) -> None:
    tenant = create_tenant(api_stack)
    body = {"emails": [SEND, {**SEND, "to": "nope"}, {**SEND, "subject": "two"}]}
    answers = asyncio.run(burst(api_stack, tenant, "/v1/emails/batch", body, "batch-burst"))
    first = check_one_answer(answers, 200)
    assert (first.json()["queued"], first.json()["failed"]) == (2, 1)
    assert db_counts(api_stack, tenant) == (2, 2)
