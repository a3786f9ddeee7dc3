"""The reputation guard (issue 22) against the real `api` schema, through the email log projector's
batch path: it pauses a tenant (through the status path: reason, paused_at, tenant.updated in the
outbox) only strictly past a threshold, never before the window holds the minimum of sends, counts
only the last N live sends, pauses once under redelivery, and a resume starts the window again.
The operator API's figures (window, rates, warn) over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from api_testkit import OPERATOR_TOKEN
from mailroom_api import cli
from mailroom_api.emails.projector import apply_email_events
from mailroom_api.reputation.policy import ReputationDefaults, id_floor, judge, over, policy_of
from mailroom_api.settings import ApiSettings
from mailroom_api.tenants import repository as tenants_repo
from mailroom_api.tenants import service as tenants
from mailroom_contracts import events
from mailroom_devstack.pytest_plugin import rollback_connection
from mailroom_kit.db import Conn, connect
from mailroom_kit.ids import new_id
from mailroom_kit.runtime import Runtime
from mailroom_kit.settings import SettingsError
from test_projector_batches import T0, CountingCursor, bounced, delivered, email, sent, tenant

DEFAULTS = ReputationDefaults()  # 1,000 sends or 7 days, at least 200; 5 % and 0.1 %


@pytest.fixture
async def conn(api_database_url: str) -> AsyncIterator[Conn]:
    async for c in rollback_connection(api_database_url, "api"):
        yield c


async def sent_emails(conn: Conn, tenant_id: str, emails: int, per_email: int = 10) -> list[tuple[str, list[str]]]:
    """`emails` live emails of `per_email` recipients each, sent (so emails * per_email sends)."""
    made = []
    for _ in range(emails):
        addresses = [f"r{new_id('evt')[-8:]}{i}@example.org" for i in range(per_email)]
        email_id = await email(conn, tenant_id, recipients=[(a, "to") for a in addresses])
        made.append((email_id, addresses))
    await apply_email_events(conn, [sent(e, tenant_id) for e, _ in made], reputation=DEFAULTS)
    return made


def complained(email_id: str, tenant_id: str, recipients: list[str]) -> events.EmailComplained:
    return events.EmailComplained(
        event_id=new_id("evt"), occurred_at=T0, tenant_id=tenant_id, email_id=email_id, recipients=recipients
    )


async def status_of(conn: Conn, tenant_id: str) -> tenants_repo.TenantRow:
    row = await tenants_repo.get_tenant(conn, tenant_id)
    assert row is not None
    return row


async def tenant_updates(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT convert_from(payload, 'UTF8')::jsonb AS event FROM outbox"
        " WHERE convert_from(payload, 'UTF8')::jsonb ->> 'tenant_id' = %s"
        " AND convert_from(payload, 'UTF8')::jsonb ->> 'type' = 'tenant.updated' ORDER BY id",
        (tenant_id,),
    )
    return [r["event"] for r in await cur.fetchall()]


async def test_the_bounce_rate_trips_only_past_five_percent_and_pauses_once(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    made = await sent_emails(conn, tenant_id, 20)  # 200 sends: the minimum
    # 10 hard bounces of 200: 5 %, at the threshold, not over it. Soft bounces are not counted.
    soft = events.EmailBounced(
        event_id=new_id("evt"),
        occurred_at=T0,
        tenant_id=tenant_id,
        email_id=made[19][0],
        recipients=made[19][1],
        bounce_type="Transient",
        bounce_subtype="MailboxFull",
    )
    await apply_email_events(
        conn, [bounced(e, tenant_id, [addresses[0]]) for e, addresses in made[:10]] + [soft], reputation=DEFAULTS
    )
    assert (await status_of(conn, tenant_id)).status == "active"
    shown = await tenants.get_tenant(conn, tenant_id, DEFAULTS)
    r = shown.reputation
    assert r is not None
    assert (r.sends, r.hard_bounces, r.complaints, r.bounce_rate, r.complaint_rate) == (200, 10, 0, 0.05, 0.0)
    assert (r.warn, r.over_threshold, r.window_sends, r.min_sends) == (True, False, 1000, 200)
    # One more send, and it hard-bounces: 11 of 201 is over 5 %.
    (last, addresses), *_ = await sent_emails(conn, tenant_id, 1, per_email=1)
    tripping: list[events.EmailEvent] = [bounced(last, tenant_id, addresses)]
    await apply_email_events(conn, tripping, reputation=DEFAULTS)
    row = await status_of(conn, tenant_id)
    assert row.status == "paused" and row.paused_at is not None
    assert row.status_reason is not None
    assert "hard-bounce rate 5.473% (11 of 201 live sends) is over 5%" in row.status_reason, row.status_reason
    (update,) = await tenant_updates(conn, tenant_id)
    assert (update["status"], update["status_reason"]) == ("paused", row.status_reason)
    # The same event redelivered, and a new hard bounce of the paused tenant: not paused again.
    (more, more_addresses), *_ = await sent_emails(conn, tenant_id, 1, per_email=1)
    await apply_email_events(conn, [*tripping, bounced(more, tenant_id, more_addresses)], reputation=DEFAULTS)
    again = await status_of(conn, tenant_id)
    assert (again.status, again.paused_at, again.updated_at) == ("paused", row.paused_at, row.updated_at)
    assert len(await tenant_updates(conn, tenant_id)) == 1


async def test_fewer_than_the_minimum_of_sends_never_trip(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    made = await sent_emails(conn, tenant_id, 1, per_email=199)  # one send short of the minimum
    email_id, addresses = made[0]
    await apply_email_events(conn, [bounced(email_id, tenant_id, addresses[:150])], reputation=DEFAULTS)
    await apply_email_events(conn, [complained(email_id, tenant_id, addresses[150:])], reputation=DEFAULTS)
    assert (await status_of(conn, tenant_id)).status == "active"
    r = (await tenants.get_tenant(conn, tenant_id, DEFAULTS)).reputation
    assert r is not None and (r.sends, r.hard_bounces, r.complaints) == (199, 150, 49)
    assert r.warn and not r.over_threshold  # warned, but it cannot trip yet
    # An email still queued (never sent) adds no send to the window.
    await email(conn, tenant_id, recipients=[("q@example.org", "to")])
    r = (await tenants.get_tenant(conn, tenant_id, DEFAULTS)).reputation
    assert r is not None and r.sends == 199


async def test_the_complaint_rate_trips_only_past_a_tenth_of_a_percent(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    made = await sent_emails(conn, tenant_id, 50, per_email=20)  # 1,000 sends: the whole window
    await apply_email_events(conn, [complained(made[0][0], tenant_id, made[0][1][:1])], reputation=DEFAULTS)
    assert (await status_of(conn, tenant_id)).status == "active"  # 1 of 1,000: 0.1 %, not over it
    r = (await tenants.get_tenant(conn, tenant_id, DEFAULTS)).reputation
    assert r is not None and (r.sends, r.complaints, r.complaint_rate, r.warn) == (1000, 1, 0.001, True)
    await apply_email_events(conn, [complained(made[1][0], tenant_id, made[1][1][:1])], reputation=DEFAULTS)
    row = await status_of(conn, tenant_id)
    assert row.status == "paused"
    assert row.status_reason is not None and "complaint rate 0.2% (2 of 1000 live sends) is over 0.1%" in (
        row.status_reason
    )


async def test_the_window_is_the_last_n_live_sends_and_test_mode_is_not_counted(conn: Conn) -> None:
    small = ReputationDefaults(window_sends=50, min_sends=20)
    tenant_id = await tenant(conn)
    old = await sent_emails(conn, tenant_id, 2)  # 20 sends, all hard-bounced, then 50 newer good ones
    await apply_email_events(
        conn, [bounced(e, tenant_id, addresses) for e, addresses in old], reputation=ReputationDefaults(enabled=False)
    )
    newer = await sent_emails(conn, tenant_id, 5)
    await apply_email_events(conn, [delivered(e, tenant_id, a) for e, a in newer], reputation=small)
    # A hard bounce of a test-mode email: not a live send, judges nothing.
    test_email = await email(conn, tenant_id, recipients=[("t@example.org", "to")])
    await conn.execute("UPDATE emails SET mode = 'test' WHERE id = %s", (test_email,))
    test_bounce = events.EmailBounced(
        event_id=new_id("evt"),
        occurred_at=T0,
        tenant_id=tenant_id,
        email_id=test_email,
        mode="test",
        recipients=["t@example.org"],
        bounce_type="Permanent",
        bounce_subtype="General",
    )
    await apply_email_events(conn, [sent(test_email, tenant_id), test_bounce], reputation=small)
    r = (await tenants.get_tenant(conn, tenant_id, small)).reputation
    assert r is not None and (r.sends, r.hard_bounces, r.window_sends) == (50, 0, 50)
    # A new hard bounce in the window: 1 of 50 is 2 %, under 5 %; 3 of 50 is 6 %.
    await apply_email_events(conn, [bounced(newer[-1][0], tenant_id, newer[-1][1][:1])], reputation=small)
    assert (await status_of(conn, tenant_id)).status == "active"
    await apply_email_events(conn, [bounced(newer[-1][0], tenant_id, newer[-1][1][1:3])], reputation=small)
    assert (await status_of(conn, tenant_id)).status == "paused"


async def test_a_resumed_tenant_is_not_paused_again_by_the_old_bounces(conn: Conn) -> None:
    small = ReputationDefaults(min_sends=20)
    tenant_id = await tenant(conn)
    made = await sent_emails(conn, tenant_id, 2)
    await apply_email_events(conn, [bounced(made[0][0], tenant_id, made[0][1][:2])], reputation=small)
    assert (await status_of(conn, tenant_id)).status == "paused"  # 2 of 20: 10 %
    resumed = await tenants.change_status(conn, tenant_id, "active", guard=small)
    assert resumed.status_reason is None and resumed.paused_at is None and resumed.reputation_since is not None
    assert resumed.reputation is not None and resumed.reputation.sends == 0
    # The old email's other recipients bounce late: the window starts at the resume, they are not in it.
    await apply_email_events(conn, [bounced(made[1][0], tenant_id, made[1][1])], reputation=small)
    assert (await status_of(conn, tenant_id)).status == "active"
    # Sends after the resume count, and trip it again past the threshold.
    fresh = await sent_emails(conn, tenant_id, 2)
    await apply_email_events(conn, [bounced(fresh[0][0], tenant_id, fresh[0][1][:1])], reputation=small)
    assert (await status_of(conn, tenant_id)).status == "active"  # 1 of 20: 5 %
    await apply_email_events(conn, [bounced(fresh[1][0], tenant_id, fresh[1][1][:1])], reputation=small)
    assert (await status_of(conn, tenant_id)).status == "paused"  # 2 of 20


async def test_a_tenants_own_thresholds_override_the_servers(conn: Conn) -> None:
    tenant_id = await tenant(conn)
    await tenants_repo.update_tenant(
        conn, tenant_id, {"reputation_bounce_rate": 0.2, "reputation_complaint_rate": 1.0, "reputation_min_sends": 10}
    )
    made = await sent_emails(conn, tenant_id, 1)
    email_id, addresses = made[0]
    await apply_email_events(conn, [bounced(email_id, tenant_id, addresses[:2])], reputation=DEFAULTS)
    await apply_email_events(conn, [complained(email_id, tenant_id, addresses[2:5])], reputation=DEFAULTS)
    assert (await status_of(conn, tenant_id)).status == "active"  # 20 % bounces, 30 % complaints: allowed
    await apply_email_events(conn, [bounced(email_id, tenant_id, addresses[5:6])], reputation=DEFAULTS)
    assert (await status_of(conn, tenant_id)).status == "paused"  # 30 %


def test_the_arithmetic_is_exact() -> None:
    assert not over(1, 1000, 0.001) and over(2, 1000, 0.001)
    assert not over(10, 200, 0.05) and over(11, 200, 0.05)
    assert not over(3, 3000, 0.001) and over(3001, 3_000_000, 0.001)
    assert not over(5, 200, 0.05, 0.5) and over(6, 200, 0.05, 0.5)  # the warn level: 2.5 %
    policy = policy_of(DEFAULTS, bounce_rate=None, complaint_rate=None, min_sends=None, since=None, now=T0)
    assert not judge(policy, sends=199, hard_bounces=199, complaints=0).tripped
    assert judge(policy, sends=200, hard_bounces=11, complaints=0).tripped
    # The id floor of a moment sorts before every id made after it and after every id made before.
    now = datetime.now(UTC)
    made = new_id("msg")
    assert id_floor("msg", now - timedelta(seconds=1)) <= made < id_floor("msg", now + timedelta(seconds=1))


async def test_the_operator_api_shows_the_figures_and_the_tenant_is_told_why(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    admin = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    created = await client.post(
        "/admin/v1/tenants",
        json={"name": "Guarded", "reputation_min_sends": 10, "reputation_bounce_rate": 0.1},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    assert created.json()["reputation"]["sends"] == 0
    key = await client.post(
        f"/admin/v1/tenants/{tenant_id}/api-keys",
        json={"name": "k", "mode": "test", "permission": "full_access"},
        headers=admin,
    )
    token = key.json()["token"]
    async with runtime.pool.connection() as conn, conn.transaction():
        made = await sent_emails(conn, tenant_id, 1)
        email_id, addresses = made[0]
        await apply_email_events(
            conn, [bounced(email_id, tenant_id, addresses[:1])], reputation=runtime.settings.reputation
        )
    got = (await client.get(f"/admin/v1/tenants/{tenant_id}", headers=admin)).json()
    r = got["reputation"]
    assert (got["status"], got["reputation_min_sends"], got["reputation_bounce_rate"]) == ("active", 10, 0.1)
    assert (r["sends"], r["hard_bounces"], r["bounce_rate"], r["bounce_rate_threshold"]) == (10, 1, 0.1, 0.1)
    assert (r["warn"], r["over_threshold"], r["min_sends"], r["window_sends"]) == (True, False, 10, 1000)
    listed = (await client.get("/admin/v1/tenants", headers=admin)).json()["data"]
    assert next(t for t in listed if t["id"] == tenant_id)["reputation"]["hard_bounces"] == 1
    async with runtime.pool.connection() as conn, conn.transaction():
        await apply_email_events(
            conn, [bounced(email_id, tenant_id, addresses[1:2])], reputation=runtime.settings.reputation
        )
    got = (await client.get(f"/admin/v1/tenants/{tenant_id}", headers=admin)).json()
    assert got["status"] == "paused" and got["paused_at"] is not None
    assert "hard-bounce rate 20% (2 of 10 live sends) is over 10%" in got["status_reason"]
    assert got["reputation"]["over_threshold"] is True
    send = {"from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": "x"}
    refused = await client.post("/v1/emails", json=send, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403 and refused.json()["error"] == "tenant_paused"
    assert got["status_reason"] in refused.json()["message"]
    # Bad input is a clear 422 naming the field.
    for body, param in (
        ({"reputation_bounce_rate": 1.5}, "reputation_bounce_rate"),
        ({"reputation_complaint_rate": -0.1}, "reputation_complaint_rate"),
        ({"reputation_min_sends": 0}, "reputation_min_sends"),
        ({"reputation_min_sends": "ten"}, "reputation_min_sends"),
    ):
        bad = await client.patch(f"/admin/v1/tenants/{tenant_id}", json=body, headers=admin)
        assert bad.status_code == 422 and bad.json()["param"] == param, bad.text
    resumed = await client.patch(
        f"/admin/v1/tenants/{tenant_id}", json={"status": "active", "reputation_min_sends": None}, headers=admin
    )
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert (body["status"], body["status_reason"], body["reputation_min_sends"]) == ("active", None, None)
    assert body["reputation"]["sends"] == 0 and body["reputation"]["min_sends"] == 200


def test_the_cli_shows_why_and_the_figures(
    api_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MAILROOM_DATABASE_URL", api_database_url)
    monkeypatch.setenv("MAILROOM_API_REPUTATION_MIN_SENDS", "10")  # the server's setting, read by the CLI
    assert cli.main(["admin", "tenants", "create", "--name", "cli-guarded", "--json"]) == 0
    tenant_id = json.loads(capsys.readouterr().out)["id"]

    async def trip() -> None:
        async with await connect(api_database_url, "api") as conn, conn.transaction():
            ((email_id, addresses),) = await sent_emails(conn, tenant_id, 1)
            reputation = ApiSettings.from_env().reputation
            await apply_email_events(conn, [bounced(email_id, tenant_id, addresses[:2])], reputation=reputation)

    asyncio.run(trip())
    assert cli.main(["admin", "tenants", "show", "--tenant", tenant_id]) == 0
    out = capsys.readouterr().out
    assert f"{tenant_id}\tcli-guarded\tpaused" in out
    assert "reason: paused by the reputation guard: hard-bounce rate 20% (2 of 10 live sends) is over 5%" in out
    assert "paused_at: " in out
    assert "sends=10/1000 bounces=2 (20% of 5%) complaints=0 (0% of 0.1%) OVER; min_sends=10" in out
    resume = ["admin", "tenants", "update", "--tenant", tenant_id, "--status", "active", "--bounce-rate", "0.5"]
    assert cli.main(resume) == 0
    capsys.readouterr()
    assert cli.main(["admin", "tenants", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(tenant_id))
    assert "\tactive\t" in line and "sends=0/1000 bounces=0 (- of 50%)" in line
    assert cli.main(["admin", "tenants", "update", "--tenant", tenant_id, "--complaint-rate", "2"]) == 1
    assert "validation_error" in capsys.readouterr().err
    assert cli.main(["admin", "tenants", "update", "--tenant", tenant_id, "--min-sends", "some"]) == 1
    assert "reputation_min_sends must be a number" in capsys.readouterr().err
    assert cli.main(["admin", "tenants", "update", "--tenant", tenant_id, "--bounce-rate", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reputation_bounce_rate"] is None


def test_the_guard_settings_default_bound_and_name_the_variable() -> None:
    assert ApiSettings.from_env({}).reputation == ReputationDefaults()
    chart_like = {  # as the Helm chart renders them (strings)
        "MAILROOM_API_REPUTATION_GUARD": "false",
        "MAILROOM_API_REPUTATION_BOUNCE_RATE": "0.02",
        "MAILROOM_API_REPUTATION_COMPLAINT_RATE": "0.0005",
        "MAILROOM_API_REPUTATION_WINDOW_SENDS": "500",
        "MAILROOM_API_REPUTATION_WINDOW_DAYS": "3",
        "MAILROOM_API_REPUTATION_MIN_SENDS": "50",
        "MAILROOM_API_REPUTATION_WARN_RATIO": "0.8",
    }
    assert ApiSettings.from_env(chart_like).reputation == ReputationDefaults(
        enabled=False,
        bounce_rate=0.02,
        complaint_rate=0.0005,
        window_sends=500,
        window_days=3.0,
        min_sends=50,
        warn_ratio=0.8,
    )
    for name, bad in (
        ("MAILROOM_API_REPUTATION_BOUNCE_RATE", "1.5"),
        ("MAILROOM_API_REPUTATION_COMPLAINT_RATE", "-0.1"),
        ("MAILROOM_API_REPUTATION_WINDOW_SENDS", "0"),
        ("MAILROOM_API_REPUTATION_WINDOW_DAYS", "0"),
        ("MAILROOM_API_REPUTATION_MIN_SENDS", "many"),
        ("MAILROOM_API_REPUTATION_WARN_RATIO", "0"),
        ("MAILROOM_API_REPUTATION_GUARD", "maybe"),
    ):
        with pytest.raises(SettingsError, match=name):
            ApiSettings.from_env({name: bad})
    with pytest.raises(SettingsError, match="MAILROOM_API_REPUTATION_MIN_SENDS must not exceed"):
        ApiSettings.from_env({"MAILROOM_API_REPUTATION_WINDOW_SENDS": "100"})  # the minimum stays 200


async def test_the_guard_costs_two_statements_per_bounced_tenant_and_none_otherwise(conn: Conn) -> None:
    """Judged only on a live hard bounce or complaint: a batch of sends and deliveries runs no
    statement of the guard; a batch with hard bounces runs two per tenant (its row, its window),
    whatever the batch's size."""

    async def statements(batch: list[events.EmailEvent], reputation: ReputationDefaults | None) -> int:
        conn.cursor_factory = CountingCursor
        CountingCursor.statements = 0
        try:
            await apply_email_events(conn, batch, reputation=reputation)
        finally:
            conn.cursor_factory = psycopg.AsyncCursor
        return CountingCursor.statements

    tenant_id = await tenant(conn)
    extra = []
    for size in (1, 20):
        made = await sent_emails(conn, tenant_id, size * 2, per_email=1)
        deliveries: list[events.EmailEvent] = [delivered(e, tenant_id, a) for e, a in made]
        half = len(deliveries) // 2
        assert await statements(deliveries[:half], None) == await statements(deliveries[half:], DEFAULTS)
        hard: list[events.EmailEvent] = [bounced(e, tenant_id, a, at=4) for e, a in made]
        extra.append(await statements(hard[half:], DEFAULTS) - await statements(hard[:half], None))
    assert extra == [2, 2]


async def test_two_projectors_tripping_at_once_pause_the_tenant_once(api_database_url: str) -> None:
    """Replicas A and B each record a hard bounce that trips the guard: A pauses the tenant and
    holds its row; B's pause waits for it, then finds the tenant paused and writes nothing."""
    small = ReputationDefaults(min_sends=20)
    setup = await connect(api_database_url, "api", autocommit=True)
    a = await connect(api_database_url, "api")
    b = await connect(api_database_url, "api")
    try:
        tenant_id = await tenant(setup)
        made = await sent_emails(setup, tenant_id, 2)  # 20 sends
        await apply_email_events(setup, [bounced(made[0][0], tenant_id, made[0][1][:1])], reputation=small)
        assert (await status_of(setup, tenant_id)).status == "active"  # 1 of 20: 5 %
        assert await apply_email_events(a, [bounced(made[1][0], tenant_id, made[1][1][:1])], reputation=small)
        assert (await status_of(a, tenant_id)).status == "paused"  # A: 2 of 20, not committed yet
        waiting = asyncio.create_task(
            apply_email_events(b, [bounced(made[0][0], tenant_id, made[0][1][1:2])], reputation=small)
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()  # B judged it over the threshold too, and waits on the tenant's row
        await a.commit()
        assert await asyncio.wait_for(waiting, 30) == ["applied"]
        await b.commit()
        row = await status_of(setup, tenant_id)
        assert row.status == "paused" and row.status_reason is not None and "2 of 20" in row.status_reason
        assert len(await tenant_updates(setup, tenant_id)) == 1
    finally:
        for c in (a, b, setup):
            await c.close()
