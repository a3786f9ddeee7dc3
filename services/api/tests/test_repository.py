"""The api repository's SQL against the real `api` schema. Each test runs in one transaction that is
rolled back at the end (`rollback_connection`), so tests need no cleanup and counts are exact: every
tenant is new, and every lookup is scoped to it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from mailroom_api.auth import repository as auth_repo
from mailroom_api.domains import repository as domains_repo
from mailroom_api.emails import repository as emails_repo
from mailroom_api.keys import repository as keys_repo
from mailroom_api.tenants import repository as tenants_repo
from mailroom_contracts.events import DomainRecord
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit.db import Conn, connect
from mailroom_kit.ids import new_id
from mailroom_kit.inbox import claim
from msgspec.structs import replace

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def conn(api_database_url: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(api_database_url, "api"):
        yield c


@pytest.fixture
async def other_conn(api_database_url: str) -> AsyncIterator[Conn]:
    """A second session (another api replica), also rolled back."""
    async for c in rollback_connection(api_database_url, "api"):
        yield c


async def tenant(conn: Conn, name: str = "Acme", **kw: Any) -> str:
    tenant_id = new_id("ten")
    await tenants_repo.insert_tenant(
        conn, tenant_id=tenant_id, name=name, monthly_quota=kw.get("monthly_quota"), rate_limit=kw.get("rate_limit")
    )
    return tenant_id


async def api_key(
    conn: Conn, tenant_id: str, *, token_hash: str | None = None, mode: str = "live"
) -> keys_repo.ApiKeyRow:
    return await keys_repo.insert_api_key(
        conn,
        key_id=new_id("key"),
        tenant_id=tenant_id,
        name="first",
        mode=mode,
        permission="full_access",
        domain_id=None,
        token_hash=token_hash or secrets.token_hex(32),
        token_prefix=f"mr_{mode}_AbCd",
        token_last4="wxyz",
    )


def domain_row(tenant_id: str, name: str, **kw: Any) -> domains_repo.DomainRow:
    row: dict[str, Any] = {
        "id": new_id("dom"),
        "tenant_id": tenant_id,
        "name": name,
        "status": "pending",
        "region": "us-east-1",
        "mail_from_domain": f"bounce.{name}",
        "records": [DomainRecord(purpose="dkim", type="CNAME", name=f"a._domainkey.{name}", value="a.dkim")],
        "track_opens": False,
        "track_clicks": False,
        "created_at": T0,
        "last_checked_at": None,
    }
    row.update(kw)
    return domains_repo.DomainRow(**row)


async def email(
    conn: Conn,
    tenant_id: str,
    *,
    email_id: str | None = None,
    mode: str = "live",
    status: str = "queued",
    created_at: datetime = T0,
    from_domain: str = "mail.acme.test",
    tags: dict[str, str] | None = None,
    recipients: list[tuple[str, str]] | None = None,
) -> str:
    email_id = email_id or new_id("msg")
    to = [a for a, kind in (recipients or []) if kind == "to"]
    await emails_repo.insert_email(
        conn,
        emails_repo.EmailRow(
            id=email_id,
            tenant_id=tenant_id,
            api_key_id="key_x",
            mode=mode,
            from_address=f"Acme <noreply@{from_domain}>",
            from_domain=from_domain,
            to_addresses=to,
            cc_addresses=[],
            bcc_addresses=[],
            reply_to=[],
            subject="Receipt",
            html="<p>hi</p>",
            text=None,
            headers={},
            tags=tags or {},
            metadata={"order": 7},
            status=status,
            created_at=created_at,
            last_event_at=created_at,
        ),
    )
    if recipients:
        await emails_repo.insert_recipients(conn, email_id, recipients, status)
    return email_id


# --------------------------------------------------------------------------- tenants


async def test_tenant_insert_get_update(conn: Conn) -> None:
    tenant_id = await tenant(conn, "Acme", monthly_quota=1000, rate_limit=5)
    row = await tenants_repo.get_tenant(conn, tenant_id)
    assert row is not None
    assert (row.name, row.status, row.monthly_quota, row.rate_limit) == ("Acme", "active", 1000, 5)
    assert await tenants_repo.get_tenant(conn, new_id("ten")) is None

    # only allow-listed columns change; unknown keys are ignored, not injected
    updated = await tenants_repo.update_tenant(
        conn, tenant_id, {"status": "paused", "rate_limit": None, "id": "ten_evil"}
    )
    assert updated is not None
    assert (updated.id, updated.status, updated.rate_limit, updated.monthly_quota) == (
        tenant_id,
        "paused",
        None,
        1000,
    )
    unchanged = await tenants_repo.update_tenant(conn, tenant_id, {})
    assert unchanged is not None and unchanged.status == "paused"
    assert await tenants_repo.update_tenant(conn, new_id("ten"), {"name": "x"}) is None

    other = await tenant(conn, "Other")
    ids = [r.id for r in await tenants_repo.list_tenants(conn)]
    assert ids == sorted(ids)
    assert {tenant_id, other} <= set(ids)


# --------------------------------------------------------------------------- API keys


async def test_key_lookup_by_token_hash_carries_tenant_status(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    token_hash = secrets.token_hex(32)
    key = await api_key(conn, tenant_id, token_hash=token_hash)

    found = await auth_repo.find_key_by_hash(conn, token_hash)
    assert found is not None
    assert (found.id, found.tenant_id, found.tenant_status, found.revoked_at) == (
        key.id,
        tenant_id,
        "active",
        None,
    )
    assert await auth_repo.find_key_by_hash(conn, secrets.token_hex(32)) is None

    await tenants_repo.update_tenant(conn, tenant_id, {"status": "blocked"})
    found = await auth_repo.find_key_by_hash(conn, token_hash)
    assert found is not None and found.tenant_status == "blocked"


async def test_revoked_key_stays_visible_with_first_revocation_time(conn: Conn) -> None:
    tenant_id, other = await tenant(conn), await tenant(conn)
    token_hash = secrets.token_hex(32)
    key = await api_key(conn, tenant_id, token_hash=token_hash)
    second = await api_key(conn, tenant_id, mode="test")
    await api_key(conn, other)

    # another tenant cannot revoke it
    assert await keys_repo.revoke_api_key(conn, other, key.id) is None
    found = await auth_repo.find_key_by_hash(conn, token_hash)
    assert found is not None and found.revoked_at is None

    revoked = await keys_repo.revoke_api_key(conn, tenant_id, key.id)
    assert revoked is not None and revoked.revoked_at is not None
    # authentication still finds it (and must refuse it because revoked_at is set)
    found = await auth_repo.find_key_by_hash(conn, token_hash)
    assert found is not None and found.revoked_at == revoked.revoked_at

    # revoking again keeps the first revocation time
    first = T0 - timedelta(days=3)
    await conn.execute("UPDATE api_keys SET revoked_at = %s WHERE id = %s", (first, key.id))
    again = await keys_repo.revoke_api_key(conn, tenant_id, key.id)
    assert again is not None and again.revoked_at == first

    listed = await keys_repo.list_api_keys(conn, tenant_id)
    assert [r.id for r in listed] == sorted([key.id, second.id])
    assert {r.id: r.revoked_at for r in listed} == {key.id: first, second.id: None}


async def test_token_hash_is_unique(conn: Conn) -> None:
    tenant_id, other = await tenant(conn), await tenant(conn)
    token_hash = secrets.token_hex(32)
    await api_key(conn, tenant_id, token_hash=token_hash)
    with pytest.raises(psycopg.errors.UniqueViolation):
        async with conn.transaction():  # a savepoint: the outer transaction survives the error
            await api_key(conn, other, token_hash=token_hash)
    assert [r.id for r in await keys_repo.list_api_keys(conn, other)] == []


# --------------------------------------------------------------------------- domains


async def test_domain_lookups_are_tenant_scoped(conn: Conn) -> None:
    tenant_id, other = await tenant(conn), await tenant(conn)
    mine = domain_row(tenant_id, "Mail.Acme.test")
    theirs = domain_row(other, "mail.other.test")
    assert await domains_repo.upsert_domain(conn, mine, None)
    assert await domains_repo.upsert_domain(conn, theirs, None)

    got = await domains_repo.get_domain(conn, tenant_id, mine.id)
    assert got is not None and got.records == mine.records
    assert await domains_repo.get_domain(conn, other, mine.id) is None
    assert await domains_repo.get_domain(conn, tenant_id, theirs.id) is None

    by_name = await domains_repo.find_domain_by_name(conn, tenant_id, "mail.ACME.test")  # case-insensitive
    assert by_name is not None and by_name.id == mine.id
    assert await domains_repo.find_domain_by_name(conn, other, "mail.acme.test") is None
    assert await domains_repo.find_domain_by_name(conn, tenant_id, "mail.other.test") is None

    assert [r.id for r in await domains_repo.list_domains(conn, tenant_id)] == [mine.id]
    assert [r.id for r in await domains_repo.list_domains(conn, other)] == [theirs.id]


async def test_find_domain_by_name_prefers_verified_then_newest(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    old_failed = domain_row(tenant_id, "acme.test", status="failed", created_at=T0)
    verified = domain_row(tenant_id, "acme.test", status="verified", created_at=T0 + timedelta(hours=1))
    newest_pending = domain_row(tenant_id, "acme.test", status="pending", created_at=T0 + timedelta(hours=2))
    for row in (old_failed, verified, newest_pending):
        await domains_repo.upsert_domain(conn, row, None)
    found = await domains_repo.find_domain_by_name(conn, tenant_id, "acme.test")
    assert found is not None and found.id == verified.id

    await conn.execute("UPDATE domains SET status = 'failed' WHERE id = %s", (verified.id,))
    found = await domains_repo.find_domain_by_name(conn, tenant_id, "acme.test")
    assert found is not None and found.id == newest_pending.id


async def test_upsert_domain_never_overwrites_a_newer_snapshot(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    checked = T0 + timedelta(minutes=10)
    snap = domain_row(tenant_id, "acme.test", status="verified", last_checked_at=checked)
    assert await domains_repo.upsert_domain(conn, snap, T0 + timedelta(minutes=11))

    async def stored() -> domains_repo.DomainRow:
        row = await domains_repo.get_domain(conn, tenant_id, snap.id)
        assert row is not None
        return row

    # an older check (e.g. a late RPC reply or a reordered event) is ignored
    older = replace(snap, status="pending", last_checked_at=T0)
    assert not await domains_repo.upsert_domain(conn, older, T0 + timedelta(minutes=20))
    # same check time, older event: ignored too
    assert not await domains_repo.upsert_domain(conn, replace(snap, status="failed"), T0 + timedelta(minutes=5))
    # same check time, no event time (an RPC reply): ignored against an event-written snapshot
    assert not await domains_repo.upsert_domain(conn, replace(snap, status="failed"), None)
    row = await stored()
    assert (row.status, row.last_checked_at, row.event_at) == ("verified", checked, T0 + timedelta(minutes=11))

    # a newer check wins and event_at never goes back
    newer = replace(snap, status="temporary_failure", last_checked_at=checked + timedelta(minutes=1), records=[])
    assert await domains_repo.upsert_domain(conn, newer, T0 + timedelta(minutes=1))
    row = await stored()
    assert (row.status, row.records, row.event_at) == ("temporary_failure", [], T0 + timedelta(minutes=11))
    assert len(await domains_repo.list_domains(conn, tenant_id)) == 1


# --------------------------------------------------------------------------- emails


async def test_email_lookup_is_scoped_by_tenant_and_mode(conn: Conn) -> None:
    tenant_id, other = await tenant(conn), await tenant(conn)
    email_id = await email(conn, tenant_id, mode="live", tags={"kind": "receipt"})

    row = await emails_repo.get_email(conn, tenant_id, "live", email_id)
    assert row is not None
    assert (row.status, row.tags, row.metadata, row.last_event_at) == (
        "queued",
        {"kind": "receipt"},
        {"order": 7},
        T0,
    )
    assert await emails_repo.get_email(conn, other, "live", email_id) is None
    assert await emails_repo.get_email(conn, tenant_id, "test", email_id) is None

    locked = await emails_repo.lock_email(conn, email_id)
    assert locked == emails_repo.LockedEmail(id=email_id, tenant_id=tenant_id, status="queued", last_event_at=T0)
    assert await emails_repo.lock_email(conn, new_id("msg")) is None


async def test_recipients_are_kept_in_order_and_updated_one_by_one(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    recipients = [("zed@example.org", "to"), ("amy@example.org", "cc"), ("bob@example.org", "bcc")]
    email_id = await email(conn, tenant_id, recipients=recipients)
    other_email = await email(conn, tenant_id, recipients=[("amy@example.org", "to")])

    # move the first one to the end of the heap and read in heap order: only ORDER BY keeps the order
    await emails_repo.update_recipient_status(conn, email_id, 0, "delivered")
    await conn.execute("SET LOCAL enable_indexscan = off")
    await conn.execute("SET LOCAL enable_bitmapscan = off")
    rows = await emails_repo.get_recipients(conn, email_id)
    assert rows == [
        emails_repo.RecipientRow(position=0, address="zed@example.org", type="to", status="delivered"),
        emails_repo.RecipientRow(position=1, address="amy@example.org", type="cc", status="queued"),
        emails_repo.RecipientRow(position=2, address="bob@example.org", type="bcc", status="queued"),
    ]
    assert [r.status for r in await emails_repo.get_recipients(conn, other_email)] == ["queued"]


async def test_timeline_insert_is_idempotent_by_event_id(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    email_id = await email(conn, tenant_id)
    queued, sent, delivered = new_id("evt"), new_id("evt"), new_id("evt")

    assert await emails_repo.insert_timeline_event(
        conn,
        event_id=delivered,
        email_id=email_id,
        type_="delivered",
        occurred_at=T0 + timedelta(seconds=2),
        data={"recipients": ["a@example.org"]},
    )
    assert await emails_repo.insert_timeline_event(
        conn, event_id=queued, email_id=email_id, type_="queued", occurred_at=T0, data={}
    )
    assert await emails_repo.insert_timeline_event(
        conn, event_id=sent, email_id=email_id, type_="sent", occurred_at=T0 + timedelta(seconds=1), data={}
    )
    # a redelivery of the same event id is refused and changes nothing
    assert not await emails_repo.insert_timeline_event(
        conn, event_id=delivered, email_id=email_id, type_="bounced", occurred_at=T0, data={"x": 1}
    )
    timeline = await emails_repo.get_timeline(conn, email_id)
    assert [(e.id, e.type) for e in timeline] == [(queued, "queued"), (sent, "sent"), (delivered, "delivered")]
    assert timeline[2].data == {"recipients": ["a@example.org"]}


async def test_lock_email_serialises_projectors(api_database_url: str, conn: Conn, other_conn: Conn) -> None:
    """`lock_email` is SELECT … FOR UPDATE: two events of one email are projected one after the
    other. The email must be committed for both sessions to see it, so it is written by its own
    connection (new tenant) and deleted afterwards."""
    setup = await connect(api_database_url, "api", autocommit=True)
    tenant_id = await tenant(setup)
    try:
        email_id = await email(setup, tenant_id)
        assert await emails_repo.lock_email(conn, email_id) is not None
        await other_conn.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await emails_repo.lock_email(other_conn, email_id)
    finally:
        await conn.rollback()
        await other_conn.rollback()
        await setup.execute("DELETE FROM emails WHERE tenant_id = %s", (tenant_id,))
        await setup.execute("DELETE FROM tenants WHERE id = %s", (tenant_id,))
        await setup.close()


async def test_update_email_status_never_moves_last_event_at_back(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    email_id = await email(conn, tenant_id)
    later = T0 + timedelta(minutes=5)
    await emails_repo.update_email_status(conn, email_id, "delivered", later)
    # the ranking is the service's (`advance`); the SQL writes the status it is given and keeps the
    # newest event time even when an older event arrives last
    await emails_repo.update_email_status(conn, email_id, "delivered", T0 + timedelta(minutes=1))
    row = await emails_repo.lock_email(conn, email_id)
    assert row is not None and (row.status, row.last_event_at) == ("delivered", later)


async def test_list_emails_filters_and_paginates(conn: Conn) -> None:
    tenant_id, other = await tenant(conn), await tenant(conn)
    base = f"msg_{secrets.token_hex(4)}"
    ids = [f"{base}{i:02d}" for i in range(5)]
    for i, email_id in enumerate(ids):
        await email(
            conn,
            tenant_id,
            email_id=email_id,
            status="delivered" if i % 2 else "queued",
            created_at=T0 + timedelta(hours=i),
            from_domain="mail.acme.test" if i < 3 else "news.acme.test",
            tags={"kind": "receipt" if i < 2 else "digest", "n": str(i)},
            recipients=[(f"user{i}@example.org", "to"), ("Shared@Example.org", "cc")],
        )
    await email(conn, tenant_id, email_id=f"{base}90", mode="test", recipients=[("user0@example.org", "to")])
    await email(conn, other, email_id=f"{base}91", recipients=[("user0@example.org", "to")])

    async def listed(**kw: Any) -> list[str]:
        args: dict[str, Any] = {
            "tenant_id": tenant_id,
            "mode": "live",
            "limit": 50,
            "before_id": None,
            "status": None,
            "created_after": None,
            "created_before": None,
        }
        args.update(kw)
        return [r.id for r in await emails_repo.list_emails(conn, **args)]

    newest_first = list(reversed(ids))
    assert await listed() == newest_first
    assert await listed(mode="test") == [f"{base}90"]
    assert await listed(tenant_id=other) == [f"{base}91"]
    # keyset pagination
    page1 = await listed(limit=2)
    page2 = await listed(limit=2, before_id=page1[-1])
    page3 = await listed(limit=2, before_id=page2[-1])
    assert (page1, page2, page3) == (newest_first[:2], newest_first[2:4], newest_first[4:])
    # filters
    assert await listed(status="delivered") == [ids[3], ids[1]]
    assert await listed(created_after=T0 + timedelta(hours=1), created_before=T0 + timedelta(hours=3)) == [
        ids[2],
        ids[1],
    ]
    assert await listed(domain="NEWS.acme.test") == [ids[4], ids[3]]
    assert await listed(tag={"kind": "receipt"}) == [ids[1], ids[0]]
    assert await listed(tag={"kind": "receipt", "n": "0"}) == [ids[0]]
    assert await listed(to="USER2@example.org") == [ids[2]]
    assert await listed(to="shared@example.org") == newest_first
    assert await listed(to="nobody@example.org") == []


# --------------------------------------------------------------------------- inbox


async def test_claim_event_once_per_consumer(conn: Conn) -> None:
    event_id = new_id("evt")
    assert await claim(conn, "api-email-log", event_id)
    assert not await claim(conn, "api-email-log", event_id)
    assert await claim(conn, "api-domains", event_id)
    cur = await conn.execute("SELECT count(*) AS n FROM inbox WHERE event_id = %s", (event_id,))
    assert await cur.fetchone() == {"n": 2}
