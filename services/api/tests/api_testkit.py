"""Helpers shared by the api tests (imported by name: conftest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import uvicorn
from litestar import Litestar
from mailroom_api.domains import service as domains
from mailroom_api.keys import service as key_service
from mailroom_api.keys.schemas import CreateApiKey
from mailroom_api.tenants import service as tenants
from mailroom_api.tenants.schemas import CreateTenant
from mailroom_contracts.events import DomainRecord, DomainSnapshot
from mailroom_devstack.infra import free_port
from mailroom_kit.runtime import Runtime
from mailroom_kit.server import server_config

OPERATOR_TOKEN = "op-" + "x" * 40


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave pytest's signal handling alone
        yield


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """Run the real app under uvicorn on the test's event loop and hand out an HTTP client for it.

    (Litestar's AsyncTestClient runs the app on a portal thread with its own event loop while
    blocking the test's loop, which deadlocks the loop-bound NATS connection and Postgres pool.)
    """
    port = free_port()
    server = _Server(server_config(app, service="api", host="127.0.0.1", port=port))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@dataclass
class Tenant:
    id: str
    live: str  # full_access live token
    test: str  # full_access test token
    sending: str  # sending_access live token


def unique_domain() -> str:
    return f"mail-{secrets.token_hex(4)}.acme.test"


async def make_tenant(rt: Runtime, name: str = "Acme") -> Tenant:
    async with rt.pool.connection() as conn, conn.transaction():
        tenant = await tenants.create_tenant(conn, CreateTenant(name=name))
        keys = [
            await key_service.create_api_key(conn, tenant.id, CreateApiKey(name=n, mode=m, permission=p))
            for n, m, p in (
                ("live", "live", "full_access"),
                ("test", "test", "full_access"),
                ("send", "live", "sending_access"),
            )
        ]
    return Tenant(id=tenant.id, live=keys[0].token, test=keys[1].token, sending=keys[2].token)


def snapshot(
    tenant_id: str,
    name: str,
    status: str = "verified",
    domain_id: str | None = None,
    last_checked_at: datetime | None = None,
) -> DomainSnapshot:
    return DomainSnapshot(
        domain_id=domain_id or f"dom_{secrets.token_hex(13)}",
        tenant_id=tenant_id,
        name=name,
        status=status,  # type: ignore[arg-type]
        region="us-east-1",
        mail_from_domain=f"bounce.{name}",
        records=[
            DomainRecord(purpose="dkim", type="CNAME", name=f"t1._domainkey.{name}", value="t1.dkim.amazonses.com")
        ],
        created_at=datetime.now(UTC),
        last_checked_at=last_checked_at,
    )


async def add_domain(rt: Runtime, tenant_id: str, name: str, status: str = "verified") -> str:
    snap = snapshot(tenant_id, name, status, last_checked_at=datetime.now(UTC))
    async with rt.pool.connection() as conn, conn.transaction():
        await domains.record_domain(conn, snap, event_at=None)
    return snap.domain_id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def table_counts(rt: Runtime, *tables: str) -> tuple[int, ...]:
    """Row counts of `tables` (names from the test itself), to show a refused request wrote nothing.
    The outbox tables count the rows ever written (their id sequence): the relay deletes what it
    published, maybe an earlier test's rows between two counts."""
    async with rt.pool.connection() as conn:
        counts = []
        for table in tables:
            if table in ("outbox", "outbox_scheduled"):
                sequence = f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS n FROM {table}_id_seq"
                cur = await conn.execute(sequence)
            else:
                cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            row = await cur.fetchone()
            assert row is not None
            counts.append(int(row["n"]))
    return tuple(counts)


def assert_error(resp: httpx.Response, status: int, code: str, param: str | None) -> None:
    """`resp` is the SPEC error body with this status, code and param, and the response's request id."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "message", "param", "request_id"}
    assert (body["error"], body["param"]) == (code, param), body
    assert body["message"]
    rid = resp.headers.get("x-request-id")
    assert rid and rid.startswith("req_") and body["request_id"] == rid
