"""Resend's emails resource (`/resend/emails`): send, get, reschedule and cancel, translated to and
from the same code as `/v1/emails` (`emails.controllers.send_one`, `emails.service.get_email`,
`emails.scheduling`). Resend's shapes: `tags` as `[{name, value}]`, attachments with `content` as
base64 text or a list of bytes, `scheduled_at` as ISO 8601 or `in N min|minutes|hour(s)|day(s)`,
`template: {id, variables}`; answers `{id}` and `{object: "email", …, last_event}`."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, patch, post
from litestar.params import HeaderParameter, JSONBody, QueryParameter

from mailroom_api.checks import EmailIdPath, id_pattern
from mailroom_api.emails import content as stored_content
from mailroom_api.emails import scheduling, service
from mailroom_api.emails.controllers import send_batch_items, send_one
from mailroom_api.emails.schemas import MAX_BATCH, EmailDetail, SendBatch, SendEmail
from mailroom_api.errors import ApiError, validation
from mailroom_api.http.body import Request as Body
from mailroom_api.http.guards import (
    RATE_ITEMS_OPT,
    TENANT_SECURITY,
    TENANT_SENDING,
    Caller,
    Rt,
    current_principal,
    runtime_of,
)
from mailroom_api.resend.templates import template_defaults

Addresses = str | list[str]


class ResendTag(Body, frozen=True, kw_only=True):
    name: str
    value: str


class ResendAttachment(Body, frozen=True, kw_only=True):
    filename: str | None = None
    content: str | list[int] | None = None
    path: str | None = None
    content_type: str | None = None
    content_id: str | None = None


class ResendTemplate(Body, frozen=True, kw_only=True):
    id: str
    variables: dict[str, Any] = {}


class ResendSendEmail(Body, frozen=True, kw_only=True):
    from_: str | None = msgspec.field(default=None, name="from")
    to: Addresses
    cc: Addresses = []
    bcc: Addresses = []
    reply_to: Addresses = []
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    headers: dict[str, Any] = {}
    tags: list[ResendTag] = []
    attachments: list[ResendAttachment] = []
    scheduled_at: str | None = None
    template: ResendTemplate | None = None


class ResendReschedule(Body, frozen=True, kw_only=True):
    id: str | None = None  # the SDK repeats the path's id in the body
    scheduled_at: str


class ResendId(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: str = "email"


class ResendEmail(msgspec.Struct, frozen=True, kw_only=True):
    object: str
    id: str
    from_: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    html: str | None
    text: str | None
    created_at: datetime
    scheduled_at: datetime | None
    last_event: str
    tags: list[dict[str, str]]


class ResendEmailItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    from_: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    created_at: datetime
    last_event: str  # the email's status (a list has no timeline)


class ResendEmailList(msgspec.Struct, frozen=True, kw_only=True):
    object: str
    has_more: bool
    data: list[ResendEmailItem]


_NATURAL = re.compile(r"^in\s+(\d+)\s*(min|mins|minute|minutes|h|hr|hrs|hour|hours|day|days)$", re.I)
_UNIT = {"min": 60, "h": 3600, "hr": 3600, "hour": 3600, "day": 86400}


def parse_scheduled_at(value: str, *, now: datetime | None = None) -> datetime:
    """ISO 8601 with an offset, or Resend's natural-language `in N min|hours|days` (from now)."""
    match = _NATURAL.match(value.strip())
    if match:
        unit = match.group(2).lower().rstrip("s")
        unit = "min" if unit.startswith("min") else unit
        return (now or datetime.now(UTC)) + timedelta(seconds=int(match.group(1)) * _UNIT[unit])
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise validation(
            "scheduled_at must be ISO 8601 with an offset or `in N min|hours|days`", "scheduled_at"
        ) from None
    if parsed.tzinfo is None:
        raise validation("scheduled_at must carry a UTC offset", "scheduled_at")
    return parsed


def _attachment(i: int, a: ResendAttachment) -> dict[str, Any]:
    if a.path is not None:
        raise validation(
            "attachments by `path` (a URL) are not supported by Mailroom; send `content`", f"attachments[{i}].path"
        )
    if a.content is None:
        raise validation("an attachment needs `content`", f"attachments[{i}].content")
    if isinstance(a.content, list):
        if any(not 0 <= b <= 255 for b in a.content):
            raise validation("content bytes must be 0..255", f"attachments[{i}].content")
        content = base64.b64encode(bytes(a.content)).decode()
    else:
        content = a.content
    out: dict[str, Any] = {"filename": a.filename or f"attachment-{i + 1}", "content": content}
    if a.content_type is not None:
        out["content_type"] = a.content_type
    if a.content_id is not None:
        out["content_id"] = a.content_id
    return out


def to_send_email(body: ResendSendEmail) -> SendEmail:
    """Resend's send body as `/v1`'s; the same validation then applies to both."""
    names = [t.name for t in body.tags]
    if len(set(names)) != len(names):
        raise validation("tag names must be unique", "tags")
    d: dict[str, Any] = {
        "to": body.to,
        "cc": body.cc,
        "bcc": body.bcc,
        "reply_to": body.reply_to,
        "headers": body.headers,
        "tags": {t.name: t.value for t in body.tags},
        "attachments": [_attachment(i, a) for i, a in enumerate(body.attachments)],
    }
    for field in ("subject", "html", "text"):
        if getattr(body, field) is not None:
            d[field] = getattr(body, field)
    if body.from_ is not None:
        d["from"] = body.from_
    if body.scheduled_at is not None:
        d["scheduled_at"] = parse_scheduled_at(body.scheduled_at).isoformat()
    if body.template is not None:
        d["template"] = {"id": body.template.id, "data": body.template.variables}
    try:
        return msgspec.convert(d, SendEmail)
    except msgspec.ValidationError as exc:
        raise validation(str(exc), None) from None


async def _with_template_defaults(request: Request[Any, Any, Any], body: ResendSendEmail) -> ResendSendEmail:
    """A send naming a template made through /resend/templates takes the template's stored `from`
    and `reply_to` where the request leaves them out (Resend's templates carry both)."""
    assert body.template is not None
    rt, principal = runtime_of(request), current_principal(request)
    async with rt.pool.connection() as conn:
        stored = await template_defaults(conn, principal.tenant_id, body.template.id)
    return msgspec.structs.replace(
        body,
        from_=body.from_ if body.from_ is not None else stored.get("from"),
        reply_to=body.reply_to or _as_list(stored.get("reply_to")),
    )


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def to_resend_email(e: EmailDetail) -> ResendEmail:
    last = e.events[-1].type if e.events else e.status
    last = last.removeprefix("email.")
    return ResendEmail(
        object="email",
        id=e.id,
        from_=e.from_,
        to=e.to,
        cc=e.cc,
        bcc=e.bcc,
        reply_to=e.reply_to,
        subject=e.subject,
        html=e.html if isinstance(e.html, str) else None,
        text=e.text if isinstance(e.text, str) else None,
        created_at=e.created_at,
        scheduled_at=e.scheduled_at,
        last_event=last,
        tags=[{"name": k, "value": v} for k, v in e.tags.items()],
    )


class ResendBatchItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str


class ResendBatchError(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    message: str


class ResendBatchResult(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ResendBatchItem]
    errors: list[ResendBatchError] = []


class ResendEmailsController(Controller):
    path = "/emails"
    security = TENANT_SECURITY
    opt = TENANT_SENDING

    @post("/", status_code=200, summary="Send an email (Resend: emails.send)")
    async def send(self, data: JSONBody[ResendSendEmail], request: Request[Any, Any, Any]) -> Response[Any]:
        if data.template is not None and (data.from_ is None or not data.reply_to):
            data = await _with_template_defaults(request, data)
        answer = await send_one(request, to_send_email(data), "POST /resend/emails")
        if isinstance(answer, Response):  # with an Idempotency-Key: the bytes first answered
            accepted = msgspec.json.decode(answer.content)
            return Response({"id": accepted["id"]}, status_code=200, headers=dict(answer.headers))
        return Response({"id": answer.id}, status_code=200)

    @post(
        "/batch",
        status_code=200,
        summary="Send up to 100 emails (Resend: batch.send); `x-batch-validation: strict` (default) "
        "refuses all when one item is invalid, `permissive` sends the valid ones",
        opt={RATE_ITEMS_OPT: "."},
    )
    async def batch(
        self,
        data: JSONBody[Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]],
        request: Request[Any, Any, Any],
        mode: Annotated[
            str, HeaderParameter(header="x-batch-validation", enum=["strict", "permissive"], required=False)
        ] = "strict",
    ) -> ResendBatchResult:
        if not 1 <= len(data) <= MAX_BATCH:
            raise validation(f"a batch holds 1 to {MAX_BATCH} emails", None)
        strict = mode == "strict"
        errors: dict[int, str] = {}
        items: list[tuple[int, dict[str, Any]]] = []
        for index, raw in enumerate(data):
            try:
                item = to_send_email(msgspec.convert(raw, ResendSendEmail))
                items.append((index, msgspec.to_builtins(item)))
            except msgspec.ValidationError as exc:
                errors[index] = str(exc)
            except ApiError as exc:
                errors[index] = exc.message
        if strict and errors:
            first = min(errors)
            raise validation(f"emails[{first}]: {errors[first]}", f"{first}")
        accepted: list[ResendBatchItem] = []
        if items:
            answer = await send_batch_items(
                request, SendBatch(emails=[i for _, i in items]), "POST /resend/emails/batch", strict=strict
            )
            result = msgspec.json.decode(answer.content)
            for out in result["data"]:
                original = items[out["index"]][0]
                if "id" in out:
                    accepted.append(ResendBatchItem(id=out["id"]))
                else:
                    errors[original] = out.get("message") or out.get("error", "refused")
        return ResendBatchResult(
            data=accepted, errors=[ResendBatchError(index=i, message=m) for i, m in sorted(errors.items())]
        )

    @get("/", summary="List emails, newest first (Resend: emails.list)")
    async def list_all(
        self,
        rt: Rt,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size")] = 20,
        after: Annotated[
            str | None, QueryParameter(pattern=id_pattern("msg"), description="the last id of the previous page")
        ] = None,
        before: Annotated[
            str | None, QueryParameter(pattern=id_pattern("msg"), description="the first id of the next page")
        ] = None,
    ) -> ResendEmailList:
        if after is not None and before is not None:
            raise validation("after and before cannot be used together", "after")
        async with rt.pool.connection() as conn:
            page = await service.list_emails(
                conn,
                principal,
                limit=limit,
                cursor=after,
                status=None,
                created_after=None,
                created_before=None,
                newer_than=before,
            )
        items = [
            ResendEmailItem(
                id=e.id,
                from_=e.from_,
                to=e.to,
                cc=e.cc,
                bcc=e.bcc,
                reply_to=e.reply_to,
                subject=e.subject,
                created_at=e.created_at,
                last_event=e.status,
            )
            for e in page.data
        ]
        return ResendEmailList(object="list", has_more=page.next_cursor is not None, data=items)

    @get("/{email_id:str}", summary="Retrieve an email (Resend: emails.get)")
    async def get_one(self, email_id: EmailIdPath, rt: Rt, principal: Caller) -> ResendEmail:
        async with rt.pool.connection() as conn:
            detail = await service.get_email(conn, principal, email_id, include_content=True)
        return to_resend_email(detail)

    @patch("/{email_id:str}", summary="Reschedule an email (Resend: emails.update)")
    async def update(
        self, email_id: EmailIdPath, data: JSONBody[ResendReschedule], rt: Rt, principal: Caller
    ) -> ResendId:
        if data.id is not None and data.id != email_id:
            raise validation("id in the body differs from the path's", "id")
        when = parse_scheduled_at(data.scheduled_at)
        async with rt.pool.connection() as conn, conn.transaction():
            done = await scheduling.reschedule_email(conn, principal, email_id, when)
        return ResendId(id=done.id)

    @post("/{email_id:str}/cancel", status_code=200, summary="Cancel a scheduled email (Resend: emails.cancel)")
    async def cancel(self, email_id: EmailIdPath, rt: Rt, principal: Caller) -> ResendId:
        async with rt.pool.connection() as conn, conn.transaction():
            canceled, content = await scheduling.cancel_email(conn, principal, email_id)
        await stored_content.discard(rt.js, content)
        return ResendId(id=canceled.id)
