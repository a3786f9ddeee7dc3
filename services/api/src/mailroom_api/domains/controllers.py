"""Domain routes (`/v1/domains`)."""

from __future__ import annotations

from litestar import Controller, delete, get, patch, post
from litestar.params import JSONBody

from mailroom_api.checks import DomainIdPath
from mailroom_api.domains import service
from mailroom_api.domains.schemas import CreateDomain, DeletedDomain, Domain, DomainList, UpdateDomain
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
        return await service.create_domain(
            rt.pool, rt.nc, principal.tenant_id, data, rpc_timeout=settings.rpc_timeout_seconds
        )

    @get("/", summary="List domains", responses=documented(401, 403))
    async def list_domains(self, rt: Rt, principal: Caller) -> DomainList:
        async with rt.pool.connection() as conn:
            return DomainList(data=await service.list_domains(conn, principal.tenant_id))

    @get("/{domain_id:str}", summary="Get a domain with per-record status", responses=documented(401, 403, 404))
    async def get_domain(self, domain_id: DomainIdPath, rt: Rt, principal: Caller) -> Domain:
        async with rt.pool.connection() as conn:
            return await service.get_domain(conn, principal.tenant_id, domain_id)

    @post(
        "/{domain_id:str}/verify",
        status_code=202,
        summary="Check the domain's DNS records and SES status now (within a second)",
        responses=documented(401, 403, 404, 409, 503),
    )
    async def verify_domain(self, domain_id: DomainIdPath, rt: Rt, settings: Settings, principal: Caller) -> Domain:
        async with rt.pool.connection() as conn:
            return await service.verify_domain(
                conn, rt.nc, principal.tenant_id, domain_id, rpc_timeout=settings.rpc_timeout_seconds
            )

    @patch(
        "/{domain_id:str}",
        summary="Change the domain's tracking defaults (they select the SES configuration set)",
        responses=documented(400, 401, 403, 404, 422, 503),
    )
    async def update_domain(
        self, domain_id: DomainIdPath, data: JSONBody[UpdateDomain], rt: Rt, settings: Settings, principal: Caller
    ) -> Domain:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.update_domain(
                conn, rt.nc, principal.tenant_id, domain_id, data, rpc_timeout=settings.rpc_timeout_seconds
            )

    @delete(
        "/{domain_id:str}",
        status_code=200,
        summary="Delete the domain and its SES identity; later sends from it are refused",
        responses=documented(401, 403, 404, 503),
    )
    async def delete_domain(
        self, domain_id: DomainIdPath, rt: Rt, settings: Settings, principal: Caller
    ) -> DeletedDomain:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.delete_domain(
                conn, rt.nc, principal.tenant_id, domain_id, rpc_timeout=settings.rpc_timeout_seconds
            )
