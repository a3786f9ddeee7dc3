"""`/resend/api-keys` (issue 21): Resend's API key routes over the same keys service as
`/v1/api-keys` (`mailroom_api.keys.service`). Resend has no test mode: a key created here has the
mode of the key that creates it (a `mr_test_` key makes `mr_test_` keys). Lists show the keys not
revoked, newest first; Mailroom does not track `last_used_at`, so it is null. Renaming a key
(`api_keys.update`) has no counterpart and answers 404 `not_found` saying so."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from mailroom_api.checks import DomainId, KeyIdPath, Name
from mailroom_api.errors import ApiError
from mailroom_api.http.body import Request as Body
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, key_cache_of
from mailroom_api.keys import service
from mailroom_api.keys.schemas import CreateApiKey, Permission
from mailroom_api.resend.paging import PageAfter, PageBefore, PageLimit, page
from mailroom_api.resend.responses import documented


class ResendCreateApiKey(Body, frozen=True, kw_only=True):
    name: Name
    permission: Permission = "full_access"
    domain_id: DomainId | None = None


class ResendCreatedApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    token: str


class ResendApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None = None


class ResendApiKeyList(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    has_more: bool
    data: list[ResendApiKey]


class ResendApiKeyDeleted(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "api_key"
    id: str
    deleted: bool = True


class ResendApiKeysController(Controller):
    path = "/api-keys"
    security = TENANT_SECURITY
    opt = TENANT

    @post("/", status_code=200, summary="Create an API key (Resend: api_keys.create)", responses=documented())
    async def create_api_key(
        self, data: JSONBody[ResendCreateApiKey], rt: Rt, principal: Caller
    ) -> ResendCreatedApiKey:
        req = CreateApiKey(name=data.name, mode=principal.mode, permission=data.permission, domain_id=data.domain_id)  # type: ignore[arg-type]  # a principal's mode is live or test
        async with rt.pool.connection() as conn, conn.transaction():
            created = await service.create_api_key(conn, principal.tenant_id, req, caller_mode=principal.mode)
        return ResendCreatedApiKey(id=created.id, token=created.token)

    @get("/", summary="List API keys (Resend: api_keys.list)", responses=documented())
    async def list_api_keys(
        self,
        rt: Rt,
        principal: Caller,
        limit: PageLimit = None,
        after: PageAfter = None,
        before: PageBefore = None,
    ) -> ResendApiKeyList:
        async with rt.pool.connection() as conn:
            keys = await service.list_api_keys(conn, principal.tenant_id)
        live = sorted((k for k in keys if k.revoked_at is None), key=lambda k: (k.created_at, k.id), reverse=True)
        views = [ResendApiKey(id=k.id, name=k.name, created_at=k.created_at) for k in live]
        data, has_more = page(views, limit=limit, after=after, before=before)
        return ResendApiKeyList(has_more=has_more, data=data)

    @delete(
        "/{key_id:str}",
        status_code=200,
        summary="Remove (revoke) an API key (Resend: api_keys.remove)",
        responses=documented(404),
    )
    async def remove_api_key(
        self, key_id: KeyIdPath, rt: Rt, principal: Caller, request: Request[Any, Any, Any]
    ) -> ResendApiKeyDeleted:
        async with rt.pool.connection() as conn, conn.transaction():
            await service.revoke_api_key(conn, principal.tenant_id, key_id)
        key_cache_of(request).invalidate()  # committed: this process's next request already sees it
        return ResendApiKeyDeleted(id=key_id)

    @patch(
        "/{key_id:str}",
        summary="Rename an API key (Resend: api_keys.update): not supported (404 not_found)",
        responses=documented(404),
    )
    async def update_api_key(self, key_id: FromPath[str]) -> None:
        raise ApiError(404, "not_found", "renaming an API key is not supported by Mailroom (see docs/resend.md)")
