"""`/resend/suppressions` (issue 21): Resend's suppression routes over the same suppression list
service as `/v1/suppressions` (`mailroom_api.suppressions.service`), within the key's tenant and
mode. A Mailroom entry is keyed by its normalised address, so the address is the entry's Resend
`id` too (every route that takes `id_or_email` takes it); `origin` is Mailroom's reason (`bounce`,
`complaint`, `manual`, and `unsubscribe`, which Resend does not have); `source_id` the email that
led to it. Lists are by address (`after` / `before` name an address), not newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from mailroom_api.errors import validation
from mailroom_api.http.body import Request
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt
from mailroom_api.resend.responses import documented
from mailroom_api.suppressions import service
from mailroom_api.suppressions.schemas import REASONS, CreateSuppression, Suppression

MAX_PAGE = 100
BATCH_MAX = 100

Address = Annotated[str, msgspec.Meta(min_length=1, max_length=998)]
Addresses = Annotated[list[Address], msgspec.Meta(min_length=1, max_length=BATCH_MAX)]


class ResendAddSuppression(Request, frozen=True, kw_only=True):
    email: Address


class ResendBatchAdd(Request, frozen=True, kw_only=True):
    emails: Addresses


class ResendBatchRemove(Request, frozen=True, kw_only=True):
    emails: Addresses | msgspec.UnsetType = msgspec.UNSET
    ids: Addresses | msgspec.UnsetType = msgspec.UNSET  # an entry's id is its address


class ResendSuppressionItem(msgspec.Struct, frozen=True, kw_only=True):
    """An entry in a list (Resend's list entries carry no `object`)."""

    id: str
    email: str
    origin: str
    source_id: str | None
    created_at: datetime


class ResendSuppression(ResendSuppressionItem, frozen=True, kw_only=True):
    object: str = "suppression"


class ResendSuppressionList(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "list"
    has_more: bool
    data: list[ResendSuppressionItem]


class ResendSuppressionRef(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "suppression"
    id: str


class ResendSuppressionRemoved(msgspec.Struct, frozen=True, kw_only=True):
    object: str = "suppression"
    id: str
    deleted: bool


class ResendBatchAdded(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ResendSuppressionRef]


class ResendBatchRemoved(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ResendSuppressionRemoved]


def _item(s: Suppression) -> ResendSuppressionItem:
    return ResendSuppressionItem(
        id=s.email, email=s.email, origin=s.reason, source_id=s.source_email_id, created_at=s.created_at
    )


def _view(s: Suppression) -> ResendSuppression:
    return ResendSuppression(**msgspec.structs.asdict(_item(s)))


class ResendSuppressionsController(Controller):
    path = "/suppressions"
    security = TENANT_SECURITY
    opt = TENANT

    @post("/", status_code=200, summary="Add a suppression (Resend: suppressions.add)", responses=documented())
    async def add_suppression(
        self, data: JSONBody[ResendAddSuppression], rt: Rt, principal: Caller
    ) -> ResendSuppressionRef:
        async with rt.pool.connection() as conn, conn.transaction():
            added = await service.add_suppression(conn, principal, CreateSuppression(email=data.email))
        return ResendSuppressionRef(id=added.email)

    @get("/", summary="List suppressions (Resend: suppressions.list)", responses=documented())
    async def list_suppressions(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="page size")] = 20,
        after: Annotated[str | None, QueryParameter(max_length=998, description="the address the page follows")] = None,
        before: Annotated[
            str | None, QueryParameter(max_length=998, description="the address the page precedes")
        ] = None,
        origin: Annotated[str | None, QueryParameter(enum=list(REASONS), description="why it is suppressed")] = None,
    ) -> ResendSuppressionList:
        if after is not None and before is not None:
            raise validation("after and before cannot be used together", "after")
        if origin is not None and origin not in REASONS:
            raise validation("origin must be one of " + ", ".join(REASONS), "origin")
        async with rt.pool.connection() as conn:
            page, more = await service.page_suppressions(
                conn,
                principal,
                limit=limit,
                after=service.normalised(after, "after") if after is not None else None,
                before=service.normalised(before, "before") if before is not None else None,
                reason=origin,
                email=None,
            )
        return ResendSuppressionList(has_more=more, data=[_item(s) for s in page])

    @post("/batch/add", status_code=200, summary="Add up to 100 suppressions", responses=documented())
    async def batch_add(self, data: JSONBody[ResendBatchAdd], rt: Rt, principal: Caller) -> ResendBatchAdded:
        for i, address in enumerate(data.emails):  # every address checked before any is added
            service.normalised(address, f"emails[{i}]")
        async with rt.pool.connection() as conn, conn.transaction():
            added = [await service.add_suppression(conn, principal, CreateSuppression(email=e)) for e in data.emails]
        return ResendBatchAdded(data=[ResendSuppressionRef(id=s.email) for s in added])

    @post("/batch/remove", status_code=200, summary="Remove up to 100 suppressions", responses=documented())
    async def batch_remove(self, data: JSONBody[ResendBatchRemove], rt: Rt, principal: Caller) -> ResendBatchRemoved:
        if isinstance(data.emails, list) == isinstance(data.ids, list):
            raise validation("give either emails or ids", "emails")
        given, param = (data.emails, "emails") if isinstance(data.emails, list) else (data.ids, "ids")
        assert isinstance(given, list)
        addresses = [service.normalised(a, f"{param}[{i}]") for i, a in enumerate(given)]
        async with rt.pool.connection() as conn, conn.transaction():
            removed = [await service.remove_suppression(conn, principal, a) for a in addresses]
        return ResendBatchRemoved(
            data=[ResendSuppressionRemoved(id=a, deleted=r) for a, r in zip(addresses, removed, strict=True)]
        )

    @get(
        "/{id_or_email:str}",
        summary="Get a suppression by id or address (Resend: suppressions.get)",
        responses=documented(404),
    )
    async def get_suppression(self, id_or_email: FromPath[str], rt: Rt, principal: Caller) -> ResendSuppression:
        async with rt.pool.connection() as conn:
            return _view(await service.get_suppression(conn, principal, id_or_email))

    @delete(
        "/{id_or_email:str}",
        status_code=200,
        summary="Remove a suppression by id or address (Resend: suppressions.remove)",
        responses=documented(404),
    )
    async def remove_suppression(
        self, id_or_email: FromPath[str], rt: Rt, principal: Caller
    ) -> ResendSuppressionRemoved:
        async with rt.pool.connection() as conn, conn.transaction():
            await service.delete_suppression(conn, principal, id_or_email)
        return ResendSuppressionRemoved(id=service.normalised(id_or_email, "id_or_email"), deleted=True)
