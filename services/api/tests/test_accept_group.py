"""Group commit of single sends (issue 15, emails/accept_group.py), on the real app and Postgres:
concurrent sends share statements and each is written whole; each keeps its own answer (a refused
from-domain, a key limited to another domain, the monthly quota, exactly); a group that fails is
accepted one by one; a send cancelled before its group is taken is not written."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest
from api_testkit import OPERATOR_TOKEN, Tenant, add_domain, assert_error, bearer, make_tenant, serve, table_counts
from mailroom_api.app import create_app
from mailroom_api.auth.service import authenticate
from mailroom_api.emails import repository as repo
from mailroom_api.emails import service
from mailroom_api.emails.accept_group import ALONE, AcceptGroups
from mailroom_api.emails.schemas import SendEmail
from mailroom_api.http.guards import ACCEPT_GROUPS_STATE
from mailroom_kit.db import connect
from mailroom_kit.runtime import Runtime

ADMIN = bearer(OPERATOR_TOKEN)


async def live_tenant(rt: Runtime) -> tuple[Tenant, str]:
    tenant = await make_tenant(rt)
    domain = f"mail-{tenant.id[-8:].lower()}.acme.test"
    await add_domain(rt, tenant.id, domain)
    return tenant, domain


def email(domain: str, n: int) -> dict[str, Any]:
    return {
        "from": f"noreply@{domain}",
        "to": [f"to{n}@example.test"],
        "cc": [f"cc{n}@example.test"],
        "bcc": [f"bcc{n}@example.test"],
        "subject": f"hi {n}",
        "text": "hello",
        "tags": {"n": str(n)},
    }


async def emails_of(rt: Runtime, tenant_id: str) -> int:
    async with rt.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM emails WHERE tenant_id = %s", (tenant_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_concurrent_sends_share_statements_and_each_is_written_whole(runtime: Runtime) -> None:
    app = create_app(runtime)
    groups: AcceptGroups = app.state[ACCEPT_GROUPS_STATE]
    live, domain = await live_tenant(runtime)
    other = await make_tenant(runtime)  # a test key: any from-domain, counted against nothing
    async with serve(app) as client:
        assert (await client.get("/v1/emails", headers=bearer(live.live))).status_code == 200  # keys cached
        assert (await client.get("/v1/emails", headers=bearer(other.test))).status_code == 200
        before = await table_counts(runtime, "emails", "email_recipients", "email_events")
        sends = [client.post("/v1/emails", json=email(domain, n), headers=bearer(live.live)) for n in range(40)]
        sends += [client.post("/v1/emails", json=email("any.test", n), headers=bearer(other.test)) for n in range(20)]
        answers = await asyncio.gather(*sends)
        assert [a.status_code for a in answers] == [202] * 60, [a.text for a in answers if a.status_code != 202]
        # Fewer statements than sends: they were written together.
        assert groups.emails == 60 and groups.statements < 60, (groups.statements, groups.emails)
        assert await table_counts(runtime, "emails", "email_recipients", "email_events") == (
            before[0] + 60,
            before[1] + 180,
            before[2] + 60,
        )
        # Each one whole and its own: its recipients in order, its tags, its tenant, its timeline.
        for n, answer in enumerate(answers):
            token = live.live if n < 40 else other.test
            got = (await client.get(f"/v1/emails/{answer.json()['id']}", headers=bearer(token))).json()
            k = n if n < 40 else n - 40
            assert [(r["email"], r["type"], r["status"]) for r in got["recipients"]] == [
                (f"to{k}@example.test", "to", "queued"),
                (f"cc{k}@example.test", "cc", "queued"),
                (f"bcc{k}@example.test", "bcc", "queued"),
            ]
            assert got["tags"] == {"n": str(k)} and got["subject"] == f"hi {k}"
            assert [e["type"] for e in got["events"]] == ["queued"]
        # Each one's EmailQueued is in the outbox, once (no relay runs in this module).
        async with runtime.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(DISTINCT event_id) AS n FROM outbox WHERE payload LIKE ANY(%s)",
                ([f"%{a.json()['id']}%".encode() for a in answers],),
            )
            row = await cur.fetchone()
        assert row is not None and row["n"] == 60
        # The live tenant's month counts its 120 live recipients; the test key's count nothing.
        usage = (await client.get("/v1/usage", headers=bearer(live.live))).json()
        assert usage["recipients_sent"] == 120
        assert (await client.get("/v1/usage", headers=bearer(other.live))).json()["recipients_sent"] == 0


async def test_each_send_in_a_group_keeps_its_own_domain_answer(runtime: Runtime) -> None:
    app = create_app(runtime)
    groups: AcceptGroups = app.state[ACCEPT_GROUPS_STATE]
    tenant, domain = await live_tenant(runtime)
    await add_domain(runtime, tenant.id, f"pending-{domain}", status="pending")
    async with serve(app) as client:
        assert (await client.get("/v1/emails", headers=bearer(tenant.live))).status_code == 200
        froms = [domain, f"pending-{domain}", "never-added.test"] * 8
        answers = await asyncio.gather(
            *(client.post("/v1/emails", json=email(d, n), headers=bearer(tenant.live)) for n, d in enumerate(froms))
        )
        assert groups.statements < len(froms)
    for d, answer in zip(froms, answers, strict=True):
        if d == domain:
            assert answer.status_code == 202, answer.text
        else:
            assert_error(answer, 403, "domain_not_verified", None)
            assert d in answer.json()["message"]
    assert await emails_of(runtime, tenant.id) == 8  # the refused ones wrote nothing


async def test_the_quota_stays_exact_when_sends_share_a_statement(runtime: Runtime) -> None:
    app = create_app(runtime)
    groups: AcceptGroups = app.state[ACCEPT_GROUPS_STATE]
    tenant, domain = await live_tenant(runtime)
    async with serve(app) as client:
        r = await client.patch(f"/admin/v1/tenants/{tenant.id}", json={"monthly_quota": 10}, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (await client.get("/v1/emails", headers=bearer(tenant.live))).status_code == 200
        # 3 recipients each: 3 of these 8 fit in 10 (9), whichever statement they are written by.
        answers = await asyncio.gather(
            *(client.post("/v1/emails", json=email(domain, n), headers=bearer(tenant.live)) for n in range(8))
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [202] * 3 + [429] * 5, [a.text for a in answers]
        for refused in (a for a in answers if a.status_code == 429):
            assert_error(refused, 429, "quota_exceeded", None)
        assert groups.alone >= 1  # a group over the quota was accepted one by one
        usage = (await client.get("/v1/usage", headers=bearer(tenant.live))).json()
        assert (usage["recipients_sent"], usage["remaining"]) == (9, 1)
    assert await emails_of(runtime, tenant.id) == 3


async def grouped(rt: Runtime, token: str, domain: str, n: int) -> repo.GroupedEmail:
    """A send as the API would group it, built from a real key's principal."""
    async with rt.pool.connection() as conn:
        principal = await authenticate(conn, f"Bearer {token}")
    req = SendEmail(from_=f"noreply@{domain}", to=f"to{n}@example.test", subject="s", text="t")
    prepared = service.prepare_email(principal, req, max_message_bytes=1024 * 1024)
    return repo.GroupedEmail(
        row=prepared.row,
        recipients=prepared.recipients,
        key_domain_id=principal.domain_id,
        needs_verified_domain=principal.mode == "live",
        event_id=prepared.event.event_id,
        outbox_subject="mailroom.email.queued",
        payload=prepared.payload,
        usage=repo.NO_USAGE,
        trace_context=None,
    )


async def test_a_key_limited_to_another_domain_is_refused_within_its_group(runtime: Runtime) -> None:
    tenant, domain = await live_tenant(runtime)
    second = f"second-{domain}"
    second_id = await add_domain(runtime, tenant.id, second)
    mine = await grouped(runtime, tenant.live, domain, 1)
    limited = msgspec.structs.replace(await grouped(runtime, tenant.live, domain, 2), key_domain_id=second_id)
    allowed = msgspec.structs.replace(await grouped(runtime, tenant.live, second, 3), key_domain_id=second_id)
    async with runtime.pool.connection() as conn:
        answers = await repo.accept_grouped(conn, [mine, limited, allowed])
        await conn.commit()
    assert answers is not None
    assert [(a.domain_allowed, a.domain_verified) for a in answers] == [(True, True), (False, True), (True, True)]
    assert await emails_of(runtime, tenant.id) == 2


async def test_a_group_that_fails_is_answered_alone_and_a_lone_failure_is_its_own(runtime: Runtime) -> None:
    tenant, domain = await live_tenant(runtime)
    first = await grouped(runtime, tenant.live, domain, 1)
    groups = AcceptGroups(runtime.pool, flushes=1)
    assert await groups.accept(first) == repo.Acceptance(domain_allowed=True, domain_verified=True)
    # The same email again (its id is taken) among two new ones: Postgres refuses the statement,
    # nothing of it is written, and each is to be accepted alone.
    again = [
        await grouped(runtime, tenant.live, domain, 2),
        first,
        await grouped(runtime, tenant.live, domain, 3),
    ]
    blocker = asyncio.create_task(groups.accept(await grouped(runtime, tenant.live, domain, 4)))
    await asyncio.sleep(0)  # the blocker's statement is in flight: the three wait for the next one
    answers = await asyncio.gather(*(groups.accept(e) for e in again))
    await blocker
    assert answers == [ALONE, ALONE, ALONE]
    assert await emails_of(runtime, tenant.id) == 2  # first and the blocker
    # Alone, the same failure is that send's own error.
    with pytest.raises(Exception) as caught:
        await groups.accept(first)
    assert repo.statement_failed(caught.value)


async def test_a_send_cancelled_before_its_group_is_taken_is_not_written(runtime: Runtime) -> None:
    tenant, domain = await live_tenant(runtime)
    groups = AcceptGroups(runtime.pool, flushes=1)
    lock = await connect(runtime.settings.database_url, "api")
    try:
        await lock.execute("LOCK TABLE emails IN SHARE MODE")  # holds the first statement's INSERT
        first = asyncio.create_task(groups.accept(await grouped(runtime, tenant.live, domain, 1)))
        await asyncio.sleep(0.3)
        waiting = asyncio.create_task(groups.accept(await grouped(runtime, tenant.live, domain, 2)))
        await asyncio.sleep(0.1)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await lock.rollback()
        assert (await first).domain_verified
    finally:
        await lock.close()
    await groups.close()
    assert await emails_of(runtime, tenant.id) == 1
    assert groups.statements == 1
