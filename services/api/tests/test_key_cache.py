"""The per-process key cache: a revocation or a tenant pause made through one API process is
honoured by another within 1 s, because the change NOTIFYs every process (the other process here
keeps lookups for 60 s, so only the NOTIFY can make it forget); and the cache's own rules."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import msgspec
import pytest
from api_testkit import OPERATOR_TOKEN, Tenant, bearer, make_tenant, serve
from mailroom_api.app import create_app
from mailroom_api.auth.cache import KeyCache
from mailroom_api.auth.repository import KeyPrincipalRow
from mailroom_api.auth.service import hash_token
from mailroom_kit.runtime import Runtime

OP = bearer(OPERATOR_TOKEN)
SEND = {"from": "a@anything.test", "to": "b@example.test", "subject": "hi", "text": "t"}


@pytest.fixture(scope="module")
async def other(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """Another API process: its own app, key cache and LISTEN, keeping lookups for 60 s."""
    settings = msgspec.structs.replace(runtime.settings, key_cache_seconds=60.0)
    async with serve(create_app(dataclasses.replace(runtime, settings=settings))) as c:
        yield c


async def _within_a_second(check: Callable[[], Awaitable[bool]]) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < 1.0, "not honoured within 1 s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _key_id(client: httpx.AsyncClient, tenant: Tenant, mode: str, permission: str) -> str:
    keys = (await client.get("/v1/api-keys", headers=bearer(tenant.live))).json()["data"]
    return str(next(k["id"] for k in keys if k["mode"] == mode and k["permission"] == permission))


async def test_the_other_process_really_caches(
    client: httpx.AsyncClient, other: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Without a NOTIFY the other process keeps serving what it looked up: the test below is only
    passed by the NOTIFY."""
    tenant = await make_tenant(runtime)
    assert (await other.get("/v1/emails", headers=bearer(tenant.test))).status_code == 200
    async with runtime.pool.connection() as conn:  # revoked behind the API's back: no NOTIFY
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE token_hash = %s", (hash_token(tenant.test),))
    assert (await other.get("/v1/emails", headers=bearer(tenant.test))).status_code == 200
    assert (await client.get("/v1/emails", headers=bearer(tenant.test))).status_code == 403


async def test_a_revocation_through_one_process_is_honoured_by_another_within_a_second(
    client: httpx.AsyncClient, other: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    assert (await other.get("/v1/emails", headers=bearer(tenant.sending))).status_code == 200
    key_id = await _key_id(client, tenant, "live", "sending_access")
    assert (await client.delete(f"/v1/api-keys/{key_id}", headers=bearer(tenant.live))).status_code == 200

    async def refused() -> bool:
        resp = await other.get("/v1/emails", headers=bearer(tenant.sending))
        return resp.status_code == 403 and resp.json()["error"] == "api_key_revoked"

    await _within_a_second(refused)
    assert (await client.get("/v1/emails", headers=bearer(tenant.sending))).status_code == 403


async def test_a_tenant_pause_through_one_process_is_honoured_by_another_within_a_second(
    client: httpx.AsyncClient, other: httpx.AsyncClient, runtime: Runtime
) -> None:
    tenant = await make_tenant(runtime)
    assert (await other.post("/v1/emails", json=SEND, headers=bearer(tenant.test))).status_code == 202
    paused = await client.patch(f"/admin/v1/tenants/{tenant.id}", json={"status": "paused"}, headers=OP)
    assert paused.status_code == 200

    async def refused() -> bool:
        resp = await other.post("/v1/emails", json=SEND, headers=bearer(tenant.test))
        return resp.status_code == 403 and resp.json()["error"] == "tenant_paused"

    await _within_a_second(refused)
    resumed = await client.patch(f"/admin/v1/tenants/{tenant.id}", json={"status": "active"}, headers=OP)
    assert resumed.status_code == 200

    async def accepted() -> bool:
        return (await other.post("/v1/emails", json=SEND, headers=bearer(tenant.test))).status_code == 202

    await _within_a_second(accepted)


def _row(key_id: str = "key_x") -> KeyPrincipalRow:
    return KeyPrincipalRow(
        id=key_id,
        tenant_id="ten_x",
        mode="live",
        permission="full_access",
        domain_id=None,
        revoked_at=None,
        tenant_status="active",
    )


def test_an_entry_lives_at_most_its_ttl_from_the_lookup() -> None:
    cache = KeyCache(0.2)
    cache.put("h", _row(), generation=cache.generation, looked_up_at=time.monotonic())
    assert cache.get("h") == _row()
    cache.put("old", _row(), generation=cache.generation, looked_up_at=time.monotonic() - 0.2)
    assert cache.get("old") is None
    assert KeyCache(0).get("h") is None


def test_a_lookup_from_before_an_invalidation_is_not_remembered() -> None:
    cache = KeyCache(1.0)
    generation = cache.generation
    cache.invalidate()  # a revocation's NOTIFY arrived while the lookup was in flight
    cache.put("h", _row(), generation=generation, looked_up_at=time.monotonic())
    assert cache.get("h") is None
    cache.put("h", _row(), generation=cache.generation, looked_up_at=time.monotonic())
    cache.invalidate()
    assert cache.get("h") is None


def test_the_cache_is_bounded() -> None:
    cache = KeyCache(1.0, max_entries=3)
    for i in range(10):
        cache.put(f"h{i}", _row(f"key_{i}"), generation=cache.generation, looked_up_at=time.monotonic())
    assert cache.get("h9") is not None and cache.get("h0") is None
    assert len([i for i in range(10) if cache.get(f"h{i}") is not None]) <= 3


async def test_concurrent_misses_of_one_key_share_one_lookup() -> None:
    cache = KeyCache(1.0)
    calls = 0
    release = asyncio.Event()

    async def fetch() -> KeyPrincipalRow | None:
        nonlocal calls
        calls += 1
        await release.wait()
        return _row()

    waiting = [asyncio.ensure_future(cache.lookup("h", fetch)) for _ in range(20)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # a caller that goes away does not cancel the lookup for the others
    release.set()
    rows = await asyncio.gather(*waiting[1:])
    assert calls == 1 and all(r == _row() for r in rows)
    assert await cache.lookup("h", fetch) == _row() and calls == 1  # now remembered


async def test_a_failed_lookup_fails_its_waiters_and_is_not_remembered() -> None:
    cache = KeyCache(1.0)

    async def broken() -> KeyPrincipalRow | None:
        await asyncio.sleep(0.01)
        raise ConnectionError("database down")

    results = await asyncio.gather(*(cache.lookup("h", broken) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)

    async def fetch() -> KeyPrincipalRow | None:
        return _row()

    assert await cache.lookup("h", fetch) == _row()


async def test_an_entry_past_half_its_ttl_is_served_and_refreshed_in_the_background() -> None:
    cache = KeyCache(0.2)
    calls = 0
    release = asyncio.Event()

    async def fetch() -> KeyPrincipalRow | None:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()
        return _row(f"key_{calls}")

    assert (await cache.lookup("h", fetch)).id == "key_1"  # type: ignore[union-attr]
    await asyncio.sleep(0.12)
    # Past half the TTL: the remembered row at once, and one refresh under way.
    assert (await asyncio.wait_for(cache.lookup("h", fetch), 0.05)).id == "key_1"  # type: ignore[union-attr]
    assert (await asyncio.wait_for(cache.lookup("h", fetch), 0.05)).id == "key_1"  # type: ignore[union-attr]
    release.set()
    await asyncio.sleep(0.01)
    assert calls == 2 and cache.get("h") == _row("key_2")
