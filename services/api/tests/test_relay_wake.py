"""The relay is woken after accepts by the process's RelayWake (a NOTIFY after the accepts' commits,
coalesced under load), not by a NOTIFY inside every accept (which serializes commits)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import httpx
from api_testkit import Tenant, bearer, make_tenant
from mailroom_api.auth.service import authenticate
from mailroom_api.emails import service
from mailroom_api.emails.relay_wake import RelayWake
from mailroom_api.emails.schemas import SendEmail
from mailroom_kit import outbox
from mailroom_kit.db import Conn, connect
from mailroom_kit.runtime import Runtime

SEND = {"from": "a@anything.test", "to": "b@example.test", "subject": "hi", "text": "t"}


@contextlib.asynccontextmanager
async def listening(url: str, channel: str) -> AsyncIterator[Conn]:
    conn = await connect(url, "api", autocommit=True)
    try:
        await conn.execute(f'LISTEN "{channel}"')
        yield conn
    finally:
        await conn.close()


async def _next_notify(conn: Conn, timeout: float) -> bool:
    async def first() -> bool:
        async for _ in conn.notifies():
            return True
        return False

    try:
        return await asyncio.wait_for(first(), timeout)
    except TimeoutError:
        return False


async def test_an_accept_wakes_the_relay_after_its_commit(client: httpx.AsyncClient, runtime: Runtime) -> None:
    tenant: Tenant = await make_tenant(runtime)
    channel = outbox.channel("api")
    async with listening(runtime.settings.database_url, channel) as conn:
        started = time.monotonic()
        resp = await client.post("/v1/emails", json=SEND, headers=bearer(tenant.test))
        assert resp.status_code == 202
        assert await _next_notify(conn, 1.0), "no NOTIFY for the relay"
        assert time.monotonic() - started < 0.5  # the wake, not the relay's 1 s poll
        # The NOTIFY committed after the row: whoever wakes on it finds the email's outbox row
        # (no relay runs in this module, so the row is still there).
        async with runtime.pool.connection() as check:
            cur = await check.execute(
                "SELECT count(*) AS n FROM outbox o JOIN email_events e ON e.id = o.event_id WHERE e.email_id = %s",
                (resp.json()["id"],),
            )
            row = await cur.fetchone()
            assert row is not None and row["n"] == 1


async def test_wakes_are_coalesced_under_load(runtime: Runtime) -> None:
    channel = "mailroom_test_wake"
    wake = RelayWake(runtime.settings.database_url, "api", channel, interval=0.3)
    stop = asyncio.Event()
    async with listening(runtime.settings.database_url, channel) as conn:
        task = asyncio.create_task(wake.run(stop))
        try:
            for _ in range(50):
                wake.accepted()
                await asyncio.sleep(0.002)
            assert await _next_notify(conn, 1.0)
            await asyncio.sleep(0.4)
            assert 1 <= wake.sent <= 2  # 50 accepts in 0.1 s: the first at once, the rest together
            wake.accepted()  # after a quiet spell: at once again
            sent = wake.sent
            deadline = time.monotonic() + 1.0
            while wake.sent == sent and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert wake.sent == sent + 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)


async def test_an_accept_statement_notifies_nobody(runtime: Runtime) -> None:
    """The accept itself carries no NOTIFY (it would serialize commits): accepted through the
    service alone, without the app's wake, nothing is notified."""
    tenant = await make_tenant(runtime)
    await asyncio.sleep(0.1)  # let any wake from earlier requests pass
    async with listening(runtime.settings.database_url, outbox.channel("api")) as conn:
        async with runtime.pool.connection() as c:
            principal = await authenticate(c, f"Bearer {tenant.test}")
        async with runtime.pool.connection() as c:
            await c.set_autocommit(True)
            accepted = await service.send_email(
                c,
                principal,
                SendEmail(from_="a@x.test", to="b@y.test", subject="s", text="t"),
                max_message_bytes=10**6,
            )
            await c.set_autocommit(False)
        assert accepted.status == "queued"
        assert not await _next_notify(conn, 0.3)
