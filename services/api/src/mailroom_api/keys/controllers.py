"""API key routes: the tenant's own (`/v1/api-keys`) and the operator's first key for a tenant
(`/admin/v1/tenants/{id}/api-keys`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody

from mailroom_api.checks import KeyIdPath, TenantIdPath
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import OPERATOR, OPERATOR_SECURITY, TENANT, TENANT_SECURITY, Caller, Rt, key_cache_of
from mailroom_api.keys import service
from mailroom_api.keys.schemas import ApiKey, ApiKeyList, CreateApiKey, CreatedApiKey


class ApiKeysController(Controller):
    path = "/v1/api-keys"
    tags = ["api-keys"]
    security = TENANT_SECURITY
    opt = TENANT

    @post("/", summary="Create an API key (token shown once)", responses=documented(400, 401, 403, 422))
    async def create_api_key(self, data: JSONBody[CreateApiKey], rt: Rt, principal: Caller) -> CreatedApiKey:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_api_key(conn, principal.tenant_id, data, caller_mode=principal.mode)

    @get("/", summary="List API keys (prefix and last 4 characters only)", responses=documented(401, 403))
    async def list_api_keys(self, rt: Rt, principal: Caller) -> ApiKeyList:
        async with rt.pool.connection() as conn:
            return ApiKeyList(data=await service.list_api_keys(conn, principal.tenant_id))

    @delete(
        "/{key_id:str}",
        status_code=200,
        summary="Revoke an API key (effective immediately)",
        responses=documented(401, 403, 404),
    )
    async def revoke_api_key(
        self, key_id: KeyIdPath, rt: Rt, principal: Caller, request: Request[Any, Any, Any]
    ) -> ApiKey:
        async with rt.pool.connection() as conn, conn.transaction():
            revoked = await service.revoke_api_key(conn, principal.tenant_id, key_id)
        key_cache_of(request).invalidate()  # committed: this process's next request already sees it
        return revoked


class AdminApiKeysController(Controller):
    path = "/admin/v1/tenants/{tenant_id:str}/api-keys"
    tags = ["operator"]
    security = OPERATOR_SECURITY
    opt = OPERATOR

    @post(
        "/",
        summary="Create an API key for a tenant (token shown once)",
        responses=documented(400, 401, 404, 422),
    )
    async def create_api_key(self, tenant_id: TenantIdPath, data: JSONBody[CreateApiKey], rt: Rt) -> CreatedApiKey:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.create_api_key(conn, tenant_id, data)
