"""`GET /v1/usage`: this month's recipients, the quota and the rate limit (full-access keys)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get

from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, rate_limiter_of
from mailroom_api.limits import service
from mailroom_api.limits.schemas import Usage


class UsageController(Controller):
    path = "/v1/usage"
    tags = ["usage"]
    security = TENANT_SECURITY
    opt = TENANT

    @get(
        "/",
        summary="This month's live recipients, the monthly quota and the rate limit",
        responses=documented(401, 403, 429),
    )
    async def get_usage(self, rt: Rt, principal: Caller, request: Request[Any, Any, Any]) -> Usage:
        async with rt.pool.connection() as conn:
            return await service.get_usage(conn, principal, rate_limiter_of(request))
