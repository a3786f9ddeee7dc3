"""Email routes (`/v1/emails`); sending-access keys may use them too."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.params import JSONBody, QueryParameter

from mailroom_api.checks import RFC3339, EmailIdPath, id_pattern, parse_timestamp
from mailroom_api.emails import service
from mailroom_api.emails.schemas import EmailAccepted, EmailDetail, EmailList, SendEmail
from mailroom_api.emails.status import STATUSES
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT_SECURITY, TENANT_SENDING, Caller, Rt, Settings


class EmailsController(Controller):
    path = "/v1/emails"
    tags = ["emails"]
    security = TENANT_SECURITY
    opt = TENANT_SENDING

    @post("/", status_code=202, summary="Queue an email", responses=documented(400, 401, 403, 413, 422))
    async def send_email(
        self, data: JSONBody[SendEmail], rt: Rt, settings: Settings, principal: Caller
    ) -> EmailAccepted:
        async with rt.pool.connection() as conn, conn.transaction():
            return await service.send_email(conn, principal, data, max_message_bytes=settings.max_message_bytes)

    @get("/", summary="List emails, newest first", responses=documented(401, 403, 422))
    async def list_emails(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size")] = 20,
        cursor: Annotated[
            str | None, QueryParameter(pattern=id_pattern("msg"), description="next_cursor of the previous page")
        ] = None,
        status: Annotated[str | None, QueryParameter(enum=sorted(STATUSES), description="email status")] = None,
        created_after: Annotated[str | None, QueryParameter(pattern=RFC3339, format="date-time")] = None,
        created_before: Annotated[str | None, QueryParameter(pattern=RFC3339, format="date-time")] = None,
        to: Annotated[str | None, QueryParameter(max_length=320, description="a recipient address")] = None,
        tag: Annotated[str | None, QueryParameter(max_length=513, description="`key:value`")] = None,
        domain: Annotated[str | None, QueryParameter(max_length=253, description="the from-domain")] = None,
    ) -> EmailList:
        async with rt.pool.connection() as conn:
            return await service.list_emails(
                conn,
                principal,
                limit=limit,
                cursor=cursor,
                status=status,
                created_after=parse_timestamp(created_after, "created_after"),
                created_before=parse_timestamp(created_before, "created_before"),
                to=to,
                tag=tag,
                domain=domain,
            )

    @get(
        "/{email_id:str}",
        summary="Get an email: recipients' status and the event timeline",
        responses=documented(401, 403, 404),
    )
    async def get_email(
        self,
        email_id: EmailIdPath,
        rt: Rt,
        principal: Caller,
        include: Annotated[
            str | None, QueryParameter(enum=["content"], description="`content` adds html, text and headers")
        ] = None,
    ) -> EmailDetail:
        include_content = "content" in (include or "").split(",")
        async with rt.pool.connection() as conn:
            return await service.get_email(conn, principal, email_id, include_content=include_content)
