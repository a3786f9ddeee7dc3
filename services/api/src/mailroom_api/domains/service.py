"""Domain rules on the API side: creation is the domains service's (it owns SES identities and DNS
records); the API keeps the newest snapshot it has seen and serves it, scoped to the tenant."""

from __future__ import annotations

from datetime import datetime

import msgspec
from mailroom_contracts import events, rpc, subjects
from mailroom_kit.db import Conn, Pool
from nats.aio.client import Client

from mailroom_api import rpc as calls
from mailroom_api.domains import repository as repo
from mailroom_api.domains.schemas import CreateDomain, DeletedDomain, Domain, UpdateDomain
from mailroom_api.errors import ApiError, not_found

DomainRow = repo.DomainRow


def _view(row: repo.DomainRow) -> Domain:
    return msgspec.convert(row, Domain, from_attributes=True)


def _row(snapshot: events.DomainSnapshot) -> repo.DomainRow:
    fields = msgspec.structs.asdict(snapshot)
    fields["id"] = fields.pop("domain_id")
    return repo.DomainRow(**fields)


async def request_domain(nc: Client, tenant_id: str, req: CreateDomain, *, rpc_timeout: float) -> events.DomainSnapshot:
    """Ask the domains service to create the domain; returns its first snapshot."""
    request = rpc.CreateDomainRequest(
        tenant_id=tenant_id,
        name=req.name,
        mail_from_subdomain=req.mail_from_subdomain,
        track_opens=req.track_opens,
        track_clicks=req.track_clicks,
        region=req.region,
    )
    reply = await calls.call(nc, subjects.RPC_DOMAINS_CREATE, request, rpc.DomainReply, timeout=rpc_timeout)
    return calls.present(reply.domain, "domains")


async def create_domain(pool: Pool, nc: Client, tenant_id: str, req: CreateDomain, *, rpc_timeout: float) -> Domain:
    """Create the domain through the domains service, keep its first snapshot, and return it."""
    snapshot = await request_domain(nc, tenant_id, req, rpc_timeout=rpc_timeout)
    async with pool.connection() as conn, conn.transaction():
        await record_domain(conn, snapshot, event_at=None)
        return await get_domain(conn, tenant_id, snapshot.domain_id)


async def record_domain(conn: Conn, snapshot: events.DomainSnapshot, *, event_at: datetime | None) -> bool:
    """Keep `snapshot` unless a newer one is stored. Returns whether it was written."""
    return await repo.upsert_domain(conn, _row(snapshot), event_at)


async def get_domain(conn: Conn, tenant_id: str, domain_id: str) -> Domain:
    row = await repo.get_domain(conn, tenant_id, domain_id)
    if row is None:
        raise not_found("domain")
    return _view(row)


async def list_domains(conn: Conn, tenant_id: str) -> list[Domain]:
    return [_view(r) for r in await repo.list_domains(conn, tenant_id)]


async def exists(conn: Conn, tenant_id: str, domain_id: str) -> bool:
    return await repo.get_domain(conn, tenant_id, domain_id) is not None


async def find(conn: Conn, tenant_id: str, domain_id: str) -> DomainRow | None:
    return await repo.get_domain(conn, tenant_id, domain_id)


async def find_by_name(conn: Conn, tenant_id: str, name: str) -> DomainRow | None:
    return await repo.find_domain_by_name(conn, tenant_id, name)


# ----------------------------------------------------------------------------- issue 18: verify, update, delete
# Each checks the tenant's read model first (another tenant's id → 404 without asking anyone), then
# asks the domains service, which owns the change, and writes its answer into the read model so
# the tenant reads its own write at once.


async def _own(conn: Conn, tenant_id: str, domain_id: str) -> None:
    if await repo.get_domain(conn, tenant_id, domain_id) is None:
        raise not_found("domain")


async def verify_domain(conn: Conn, nc: Client, tenant_id: str, domain_id: str, *, rpc_timeout: float) -> Domain:
    """Ask for a check now (the domains service runs it within a second); the current domain."""
    await _own(conn, tenant_id, domain_id)
    request = rpc.VerifyDomainRequest(tenant_id=tenant_id, domain_id=domain_id)
    reply = await calls.call(nc, subjects.RPC_DOMAINS_VERIFY, request, rpc.DomainReply, timeout=rpc_timeout)
    calls.present(reply.domain, "domains")
    return await get_domain(conn, tenant_id, domain_id)


async def update_domain(
    conn: Conn, nc: Client, tenant_id: str, domain_id: str, req: UpdateDomain, *, rpc_timeout: float
) -> Domain:
    if req.track_opens is None and req.track_clicks is None:
        raise ApiError(422, "validation_error", "give track_opens and/or track_clicks", param="track_opens")
    await _own(conn, tenant_id, domain_id)
    request = rpc.UpdateDomainRequest(
        tenant_id=tenant_id, domain_id=domain_id, track_opens=req.track_opens, track_clicks=req.track_clicks
    )
    reply = await calls.call(nc, subjects.RPC_DOMAINS_UPDATE, request, rpc.DomainReply, timeout=rpc_timeout)
    snapshot = calls.present(reply.domain, "domains")
    # The reply carries the time of its DomainUpdated event, so that event's delivery is no newer.
    await repo.upsert_domain(conn, _row(snapshot), reply.event_at)
    return await get_domain(conn, tenant_id, domain_id)


async def delete_domain(conn: Conn, nc: Client, tenant_id: str, domain_id: str, *, rpc_timeout: float) -> DeletedDomain:
    """The domains service deletes the SES identity and the domain; the read model forgets it (sends
    from its name are refused from the commit on)."""
    await _own(conn, tenant_id, domain_id)
    request = rpc.DeleteDomainRequest(tenant_id=tenant_id, domain_id=domain_id)
    reply = await calls.call(nc, subjects.RPC_DOMAINS_DELETE, request, rpc.DomainReply, timeout=rpc_timeout)
    calls.present(reply.domain, "domains")
    await repo.delete_domain(conn, tenant_id, domain_id)
    return DeletedDomain(id=domain_id)


async def forget_domain(conn: Conn, snapshot: events.DomainSnapshot) -> None:
    """A DomainDeleted event (the projector): the same as the API's own delete, idempotent."""
    await repo.delete_domain(conn, snapshot.tenant_id, snapshot.domain_id)
