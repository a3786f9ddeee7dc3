"""issue 23, the stream gap: MAILROOM_TENANT keeps 14 days, so the api re-publishes every non-active
tenant's current state (at start and periodically), with the row's own `updated_at` and an event id
derived from the state: replicas doing it together, or one doing it twice, publish it once."""

from __future__ import annotations

import asyncio
import json

import httpx
from api_testkit import OPERATOR_TOKEN, bearer, make_tenant
from mailroom_api.app import MIGRATIONS
from mailroom_api.tenants.republish import republish_states, republish_worker
from mailroom_contracts.streams import TENANT_STREAM
from mailroom_devstack.pytest_plugin import eventually
from mailroom_kit.runtime import Runtime

OP = bearer(OPERATOR_TOKEN)


async def _published(rt: Runtime, tenant_ids: set[str]) -> list[tuple[str, dict[str, object]]]:
    info = await rt.js.stream_info(TENANT_STREAM.name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await rt.js.get_msg(TENANT_STREAM.name, seq)
        payload = json.loads(msg.data or b"{}")
        if payload.get("tenant_id") in tenant_ids:
            found.append(((msg.headers or {}).get("Nats-Msg-Id", ""), payload))
    return found


async def test_non_active_tenants_are_republished_once_with_their_state(
    client: httpx.AsyncClient, runtime: Runtime, workers: None
) -> None:
    paused, blocked, active = [await make_tenant(runtime) for _ in range(3)]
    for t, status in ((paused, "paused"), (blocked, "blocked")):
        r = await client.patch(f"/admin/v1/tenants/{t.id}", json={"status": status, "status_reason": "ops"}, headers=OP)
        assert r.status_code == 200
    ids = {paused.id, blocked.id, active.id}

    async def count_is(n: int) -> bool:
        return len(await _published(runtime, ids)) == n

    await eventually(lambda: count_is(2))  # the two status changes
    # Twice, as two replicas starting together would: one outbox row, one stream message per tenant.
    for _ in range(2):
        async with runtime.pool.connection() as conn, conn.transaction():
            assert await republish_states(conn) >= 2
    await eventually(lambda: count_is(4))
    await asyncio.sleep(1.0)  # nothing more comes
    messages = await _published(runtime, ids)
    assert len(messages) == 4
    by_tenant: dict[object, list[tuple[str, dict[str, object]]]] = {}
    for msg_id, payload in messages:
        by_tenant.setdefault(payload["tenant_id"], []).append((msg_id, payload))
    assert active.id not in by_tenant  # an active tenant needs nothing: no row = active
    for t, status in ((paused, "paused"), (blocked, "blocked")):
        (change_id, change), (again_id, again) = by_tenant[t.id]
        assert (again["type"], again["status"], again["status_reason"]) == ("tenant.updated", status, "ops")
        # The same state as the change (latest updated_at wins: a no-op where it is known) ...
        assert again["updated_at"] == change["updated_at"]
        # ... under its own deterministic id, which is the JetStream de-duplication id.
        assert again_id == again["event_id"] != change_id
        assert str(again["event_id"]).startswith("evt_") and len(str(again["event_id"])) == 30


async def test_the_worker_republishes_at_start(client: httpx.AsyncClient, runtime: Runtime, workers: None) -> None:
    t = await make_tenant(runtime)
    r = await client.patch(f"/admin/v1/tenants/{t.id}", json={"status": "paused"}, headers=OP)
    assert r.status_code == 200

    async def count_is(n: int) -> bool:
        return len(await _published(runtime, {t.id})) == n

    await eventually(lambda: count_is(1))
    # A process starting now (its own stop event; the module's relay publishes its outbox).
    starting = Runtime(
        name="api",
        schema="api",
        settings=runtime.settings,
        migrations_dir=MIGRATIONS,
        pool=runtime.pool,
        nc=runtime.nc,
        js=runtime.js,
    )
    task = asyncio.create_task(republish_worker(starting))
    try:
        await eventually(lambda: count_is(2))
    finally:
        starting.stop.set()
        await asyncio.wait_for(task, 10)
    (_, change), (_, again) = [p for p in await _published(runtime, {t.id})]
    assert (again["status"], again["updated_at"]) == ("paused", change["updated_at"])
