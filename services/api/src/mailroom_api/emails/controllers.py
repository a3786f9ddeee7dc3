"""Email routes (`/v1/emails`); sending-access keys may use them too."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.params import JSONBody, QueryParameter
from mailroom_kit.db import single_statement
from mailroom_kit.http import add_log_fields

from mailroom_api.checks import RFC3339, EmailIdPath, id_pattern, parse_timestamp
from mailroom_api.emails import content as stored_content
from mailroom_api.emails import idempotency, scheduling, service
from mailroom_api.emails.idempotency import HEADER, REPLAYED_HEADER, IdempotentOperation
from mailroom_api.emails.schemas import (
    BatchResult,
    EmailAccepted,
    EmailDetail,
    EmailList,
    EmailSchedule,
    RescheduleEmail,
    SendBatch,
    SendEmail,
)
from mailroom_api.emails.status import STATUSES
from mailroom_api.errors import validation
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import (
    RATE_ITEMS_OPT,
    TENANT_SECURITY,
    TENANT_SENDING,
    Caller,
    Rt,
    accept_groups_of,
    current_principal,
    relay_wake_of,
    runtime_of,
    unsubscribe_links_of,
)
from mailroom_api.templates import service as templates
from mailroom_api.templates.controllers import render_pool_of

REPLAYED = ResponseHeader(
    name=REPLAYED_HEADER,
    description="`true` when this is the answer first given for the request's Idempotency-Key",
    documentation_only=True,
    required=False,
)


def _answer(request: Request[Any, Any, Any], answer: service.Answer) -> Response[bytes]:
    """An answer given as bytes (the very bytes an Idempotency-Key replays)."""
    if answer.written:
        relay_wake_of(request).accepted()  # committed: the relay may look now
    if answer.replayed:
        add_log_fields(request.scope, idempotent_replay=True)
    elif answer.queued is not None:
        add_log_fields(request.scope, emails_queued=answer.queued, emails_failed=answer.failed)
    headers = {REPLAYED_HEADER: "true"} if answer.replayed else None
    return Response(answer.body, status_code=answer.status_code, media_type="application/json", headers=headers)


async def send_one(request: Request[Any, Any, Any], data: SendEmail, scope: str) -> EmailAccepted | Response[bytes]:
    """One send, as `POST /v1/emails` (and `/resend/emails`, issue 21) does it: `scope` names the
    route an Idempotency-Key belongs to. A replayable answer comes back as its encoded bytes."""
    # The hot path: no dependencies (Litestar resolves several in an anyio TaskGroup per
    # request); the runtime, settings and principal come from the app and the guard.
    rt = runtime_of(request)
    principal = current_principal(request)
    key = await idempotency.read_key(request, scope) if HEADER in request.headers else None
    settings = rt.settings
    rendered = None
    if data.template is not None:  # issue 17: one indexed read, then a render worker's round trip
        rendered = await templates.render_send(
            rt.pool,
            render_pool_of(request),
            principal,
            data,
            extra=settings.template_extra_variables,
            max_output=settings.max_message_bytes,
        )
    prepared = service.prepare_send(
        principal,
        data,
        max_message_bytes=settings.max_message_bytes,
        unsubscribe_links=unsubscribe_links_of(request),
        rendered=rendered,
    )
    prepared = await service.offload_large(prepared, js=rt.js, threshold=settings.offload_threshold_bytes)
    try:
        if key is None and service.groupable(principal, prepared):  # issue 15: group commit
            await service.accept_grouped(accept_groups_of(request), principal, prepared)
        else:
            async with rt.pool.connection() as conn, single_statement(conn):
                if key is None:
                    # issue 22: a query only for a tenant whose list (of this mode) has entries
                    await service.accept_email(
                        conn, principal, await service.check_suppressions(conn, principal, prepared)
                    )
                else:
                    answer = await service.accept_email_once(
                        conn, principal, prepared, key, ttl_seconds=settings.idempotency_ttl_seconds
                    )
    except Exception as exc:
        if service.nothing_written(exc):
            await service.discard_content(rt.js, [prepared])
        raise
    if key is None:
        relay_wake_of(request).accepted()  # committed: the relay may look now
        return prepared.accepted
    if not answer.written:  # a replay: the email of the first request is the one
        await service.discard_content(rt.js, [prepared])
    return _answer(request, answer)


async def send_batch_items(
    request: Request[Any, Any, Any], data: SendBatch, scope: str, *, strict: bool = False
) -> Response[bytes]:
    """A batch, as `POST /v1/emails/batch` (and `/resend/emails/batch`, issue 21) does it; `strict`
    refuses the whole batch (nothing written) when an item fails validation."""
    rt = runtime_of(request)
    principal = current_principal(request)
    key = await idempotency.read_key(request, scope)
    # issue 17: templated items resolved (one statement) and rendered before validation
    rendered = await templates.render_batch(
        rt.pool,
        render_pool_of(request),
        principal,
        data.emails,
        extra=rt.settings.template_extra_variables,
        max_output=rt.settings.max_message_bytes,
    )
    # Validation first: a connection is held only for the writes.
    batch = service.prepare_batch(
        principal,
        data,
        max_message_bytes=rt.settings.max_message_bytes,
        unsubscribe_links=unsubscribe_links_of(request),
        rendered=rendered,
    )
    if strict and batch.failures:  # issue 21 (Resend's strict mode): one bad item refuses all, unwritten
        first = batch.failures[min(batch.failures)]
        raise validation(f"emails[{first.index}]: {first.message}", f"{first.index}")
    batch = await service.offload_batch(batch, js=rt.js, threshold=rt.settings.offload_threshold_bytes)
    try:
        async with rt.pool.connection() as conn, single_statement(conn):
            answer = await service.accept_batch(
                conn, principal, batch, key=key, ttl_seconds=rt.settings.idempotency_ttl_seconds
            )
    except Exception as exc:
        if service.nothing_written(exc):
            await service.discard_content(rt.js, batch.prepared.values())
        raise
    await service.discard_content(rt.js, [p for p in batch.prepared.values() if p.row.id not in answer.written_ids])
    return _answer(request, answer)  # the BatchResult, encoded once


class EmailsController(Controller):
    path = "/v1/emails"
    tags = ["emails"]
    security = TENANT_SECURITY
    opt = TENANT_SENDING

    @post(
        "/",
        status_code=202,
        summary="Queue an email",
        responses=documented(400, 401, 402, 403, 404, 409, 413, 422, 429),  # 404: its template (issue 17)
        operation_class=IdempotentOperation,
        response_headers=[REPLAYED],
    )
    async def send_email(self, data: JSONBody[SendEmail], request: Request[Any, Any, Any]) -> EmailAccepted:
        return await send_one(request, data, "POST /v1/emails")  # type: ignore[return-value]  # bytes once

    @post(
        "/batch",
        status_code=200,
        summary="Queue up to 100 emails, each accepted or refused on its own",
        responses=documented(400, 401, 402, 403, 409, 413, 422, 429),
        operation_class=IdempotentOperation,
        response_headers=[REPLAYED],
        opt={RATE_ITEMS_OPT: "emails"},  # issue 23: a batch costs one token per item
    )
    async def send_batch(self, data: JSONBody[SendBatch], request: Request[Any, Any, Any]) -> BatchResult:
        return await send_batch_items(request, data, "POST /v1/emails/batch")  # type: ignore[return-value]

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
            str | None,
            QueryParameter(enum=["content"], description="`content` adds html, text, headers and attachments"),
        ] = None,
    ) -> EmailDetail:
        include_content = "content" in (include or "").split(",")
        async with rt.pool.connection() as conn:
            return await service.get_email(conn, principal, email_id, include_content=include_content)

    # ------------------------------------------------------------------------- scheduling

    @patch(
        "/{email_id:str}",
        summary="Reschedule a scheduled email",
        description="`scheduled_at` as at send (RFC 3339 with an offset, future, at most 30 days ahead). "
        "409 `conflict` once the email is no longer scheduled (its time came and sending began, or it "
        "was canceled).",
        responses=documented(401, 403, 404, 409, 422),
    )
    async def reschedule_email(
        self, email_id: EmailIdPath, data: JSONBody[RescheduleEmail], rt: Rt, principal: Caller
    ) -> EmailSchedule:
        async with rt.pool.connection() as conn, conn.transaction():
            return await scheduling.reschedule_email(conn, principal, email_id, data.scheduled_at)

    @post(
        "/{email_id:str}/cancel",
        status_code=200,
        summary="Cancel a scheduled email",
        description="The email is never sent (status `canceled`, webhook `email.canceled`). 409 `conflict` "
        "once it is no longer scheduled (sending began, or it was canceled before).",
        responses=documented(401, 403, 404, 409),
    )
    async def cancel_email(self, email_id: EmailIdPath, rt: Rt, principal: Caller) -> EmailSchedule:
        async with rt.pool.connection() as conn, conn.transaction():
            canceled, content = await scheduling.cancel_email(conn, principal, email_id)
        await stored_content.discard(rt.js, content)  # committed: its offloaded content is never read
        return canceled
