"""Operator routes for tenants (`/admin/v1/tenants`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, patch, post
from litestar.params import JSONBody

from mailroom_api.checks import TenantIdPath
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import OPERATOR, OPERATOR_SECURITY, Rt, key_cache_of
from mailroom_api.tenants import service
from mailroom_api.tenants.schemas import CreateTenant, Tenant, TenantList, UpdateTenant


class AdminTenantsController(Controller):
    path = "/admin/v1/tenants"
    tags = ["operator"]
    security = OPERATOR_SECURITY
    opt = OPERATOR

    @post("/", summary="Create a tenant", responses=documented(400, 401, 422))
    async def create_tenant(self, data: JSONBody[CreateTenant], rt: Rt) -> Tenant:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_tenant(conn, data, rt.settings.reputation)

    @get("/", summary="List tenants", responses=documented(401))
    async def list_tenants(self, rt: Rt) -> TenantList:
        async with rt.pool.connection() as conn:
            return TenantList(data=await service.list_tenants(conn, rt.settings.reputation))

    @get("/{tenant_id:str}", summary="Get a tenant", responses=documented(401, 404))
    async def get_tenant(self, tenant_id: TenantIdPath, rt: Rt) -> Tenant:
        async with rt.pool.connection() as conn:
            return await service.get_tenant(conn, tenant_id, rt.settings.reputation)

    @patch(
        "/{tenant_id:str}",
        summary="Update a tenant (status, quota, rate limit)",
        responses=documented(400, 401, 404, 422),
    )
    async def update_tenant(
        self, tenant_id: TenantIdPath, data: JSONBody[UpdateTenant], rt: Rt, request: Request[Any, Any, Any]
    ) -> Tenant:
        async with rt.pool.connection() as conn, conn.transaction():
            updated = await service.update_tenant(conn, tenant_id, data, rt.settings.reputation)
        key_cache_of(request).invalidate()  # committed: this process's next request already sees it
        return updated
