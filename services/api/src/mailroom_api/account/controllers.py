"""`/v1/settings`: the tenant's settings (full-access keys)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, patch
from litestar.params import JSONBody

from mailroom_api.account import service
from mailroom_api.account.schemas import AccountSettings, UpdateSettings
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, key_cache_of


class SettingsController(Controller):
    path = "/v1/settings"
    tags = ["settings"]
    security = TENANT_SECURITY
    opt = TENANT

    @get("/", summary="The tenant's settings (default sender)", responses=documented(401, 403))
    async def get_settings(self, rt: Rt, principal: Caller) -> AccountSettings:
        async with rt.pool.connection() as conn:
            return await service.get_settings(conn, principal)

    @patch(
        "/",
        summary="Change the tenant's settings: `default_from` (null clears it)",
        responses=documented(400, 401, 403, 422),
    )
    async def update_settings(
        self, data: JSONBody[UpdateSettings], rt: Rt, principal: Caller, request: Request[Any, Any, Any]
    ) -> AccountSettings:
        async with rt.pool.connection() as conn, conn.transaction():
            updated = await service.update_settings(conn, principal, data)
        key_cache_of(request).invalidate()  # committed: this process's next send already uses it
        return updated
