"""Domain routes (`/v1/domains`)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import JSONBody

from mailroom_api.checks import DomainIdPath
from mailroom_api.domains import service
from mailroom_api.domains.schemas import CreateDomain, Domain, DomainList
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, Settings


class DomainsController(Controller):
    path = "/v1/domains"
    tags = ["domains"]
    security = TENANT_SECURITY
    opt = TENANT

    @post(
        "/",
        summary="Add a sending domain (returns its DNS records)",
        responses=documented(400, 401, 403, 409, 422, 503),
    )
    async def create_domain(
        self, data: JSONBody[CreateDomain], rt: Rt, settings: Settings, principal: Caller
    ) -> Domain:
        snapshot = await service.request_domain(
            rt.nc, principal.tenant_id, data, rpc_timeout=settings.rpc_timeout_seconds
        )
        async with rt.pool.connection() as conn, conn.transaction():
            await service.record_domain(conn, snapshot, event_at=None)
            return await service.get_domain(conn, principal.tenant_id, snapshot.domain_id)

    @get("/", summary="List domains", responses=documented(401, 403))
    async def list_domains(self, rt: Rt, principal: Caller) -> DomainList:
        async with rt.pool.connection() as conn:
            return DomainList(data=await service.list_domains(conn, principal.tenant_id))

    @get("/{domain_id:str}", summary="Get a domain with per-record status", responses=documented(401, 403, 404))
    async def get_domain(self, domain_id: DomainIdPath, rt: Rt, principal: Caller) -> Domain:
        async with rt.pool.connection() as conn:
            return await service.get_domain(conn, principal.tenant_id, domain_id)
