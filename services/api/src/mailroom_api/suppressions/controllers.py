"""Suppression list routes (`/v1/suppressions`)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt
from mailroom_api.suppressions import service
from mailroom_api.suppressions.schemas import REASONS, CreateSuppression, Suppression, SuppressionList


class SuppressionsController(Controller):
    path = "/v1/suppressions"
    tags = ["suppressions"]
    security = TENANT_SECURITY
    opt = TENANT

    @get(
        "/",
        summary="List suppressed addresses (of the key's mode), by address",
        description="`email` looks one address up (normalised as at send); `reason` filters.",
        responses=documented(401, 403, 422),
    )
    async def list_suppressions(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=service.MAX_LIMIT, description="page size")] = 100,
        cursor: Annotated[
            str | None, QueryParameter(max_length=2000, description="next_cursor of the previous page")
        ] = None,
        reason: Annotated[str | None, QueryParameter(enum=list(REASONS), description="why it is suppressed")] = None,
        email: Annotated[str | None, QueryParameter(max_length=998, description="one address to look up")] = None,
    ) -> SuppressionList:
        async with rt.pool.connection() as conn:
            return await service.list_suppressions(
                conn, principal, limit=limit, cursor=cursor, reason=reason, email=email
            )

    @post(
        "/",
        summary="Suppress an address (reason `manual`)",
        description="Idempotent: an address already on the list keeps its entry, which is returned.",
        responses=documented(401, 403, 422),
    )
    async def add_suppression(self, data: JSONBody[CreateSuppression], rt: Rt, principal: Caller) -> Suppression:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.add_suppression(conn, principal, data)

    @delete(
        "/{email:str}",
        summary="Remove an address from the suppression list (sends to it go out again)",
        responses=documented(401, 403, 404, 422),
    )
    async def delete_suppression(self, email: FromPath[str], rt: Rt, principal: Caller) -> None:
        async with rt.pool.connection() as conn, conn.transaction():
            await service.delete_suppression(conn, principal, email)
