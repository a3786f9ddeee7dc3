"""Accepting emails and reading the email log.

Accepting: the tenant may send (not paused/blocked), the request is valid, and the from-domain is
allowed (a live key needs a verified domain of the tenant; a key limited to a domain only sends
from it). The email, its recipients, the `queued` timeline entry and the EmailQueued event are then
written in the caller's transaction, so a 202 is visible at once and nothing is half-accepted.
Reading: a key sees only its own tenant's emails of its own mode.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mailroom_contracts import encode, events, subject_for
from mailroom_kit.db import Conn
from mailroom_kit.ids import has_prefix, new_id

from mailroom_api.auth.service import Principal
from mailroom_api.emails import repository as repo
from mailroom_api.emails import scheduling
from mailroom_api.emails.schemas import (
    EmailAccepted,
    EmailDetail,
    EmailList,
    EmailSummary,
    Recipient,
    SendEmail,
    TimelineEvent,
)
from mailroom_api.emails.status import STATUSES
from mailroom_api.emails.validation import ValidEmail, validate_send
from mailroom_api.errors import forbidden, not_found, validation

SCHEMA = "api"


def _check_tenant(principal: Principal) -> None:
    if principal.tenant_status == "paused":
        raise forbidden("tenant_paused", "sending is paused for this account")
    if principal.tenant_status == "blocked":
        raise forbidden("tenant_blocked", "sending is blocked for this account")


def _queued_event(principal: Principal, email_id: str, email: ValidEmail, now: datetime) -> events.EmailQueued:
    scheduled_at = email.scheduled_at  # scheduling: published at that time, found by its derived id
    return events.EmailQueued(
        event_id=new_id("evt") if scheduled_at is None else scheduling.queued_event_id(email_id),
        occurred_at=now if scheduled_at is None else max(now, scheduled_at),
        tenant_id=principal.tenant_id,
        email_id=email_id,
        mode="test" if principal.mode == "test" else "live",
        from_=email.sender.contract(),
        to=[a.contract() for a in email.to],
        cc=[a.contract() for a in email.cc],
        bcc=[a.contract() for a in email.bcc],
        reply_to=[a.contract() for a in email.reply_to],
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=email.headers,
        tags=email.tags,
        metadata=email.metadata,
        created_at=now,
        scheduled_at=scheduled_at,
    )


def _log_row(principal: Principal, email_id: str, email: ValidEmail, now: datetime) -> repo.EmailRow:
    return repo.EmailRow(
        id=email_id,
        tenant_id=principal.tenant_id,
        api_key_id=principal.key_id,
        mode=principal.mode,
        from_address=email.sender.original,
        from_domain=email.sender.domain,
        to_addresses=[a.original for a in email.to],
        cc_addresses=[a.original for a in email.cc],
        bcc_addresses=[a.original for a in email.bcc],
        reply_to=[a.original for a in email.reply_to],
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=email.headers,
        tags=email.tags,
        metadata=email.metadata,
        status="queued" if email.scheduled_at is None else "scheduled",
        created_at=now,
        last_event_at=now,
    )


async def send_email(conn: Conn, principal: Principal, req: SendEmail, *, max_message_bytes: int) -> EmailAccepted:
    """Accept one email (see the module docstring); `max_message_bytes` bounds the built message.
    One statement writes it all or, when the from-domain is refused, nothing."""
    _check_tenant(principal)
    email = validate_send(req, max_message_bytes=max_message_bytes)
    now = datetime.now(UTC)
    email_id = new_id("msg")
    queued = _queued_event(principal, email_id, email, now)
    recipients = [
        (a.email, kind) for kind, group in (("to", email.to), ("cc", email.cc), ("bcc", email.bcc)) for a in group
    ]
    accepted = await repo.accept_email(
        conn,
        _log_row(principal, email_id, email, now),
        recipients=recipients,
        key_domain_id=principal.domain_id,
        needs_verified_domain=principal.mode == "live",
        event_id=queued.event_id,
        outbox_subject=subject_for(queued),
        payload=encode(queued),
        schedule=None if email.scheduled_at is None else scheduling.scheduled_accept(queued, now),
    )
    if not accepted.domain_allowed:
        raise forbidden("from_domain_not_allowed", "this API key may only send from its own domain")
    if not accepted.domain_verified:
        raise forbidden("domain_not_verified", f"{email.sender.domain} is not a verified domain of this account")
    return EmailAccepted(id=email_id, status="queued" if email.scheduled_at is None else "scheduled", created_at=now)


def _summary_fields(row: repo.EmailRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "from_": row.from_address,
        "to": row.to_addresses,
        "cc": row.cc_addresses,
        "bcc": row.bcc_addresses,
        "reply_to": row.reply_to,
        "subject": row.subject,
        "tags": row.tags,
        "metadata": row.metadata,
        "status": row.status,
        "mode": row.mode,
        "created_at": row.created_at,
        "last_event_at": row.last_event_at,
    }


async def get_email(conn: Conn, principal: Principal, email_id: str, *, include_content: bool) -> EmailDetail:
    row = await repo.get_email(conn, principal.tenant_id, principal.mode, email_id)
    if row is None:
        raise not_found("email")
    recipients = [
        Recipient(email=r.address, type=r.type, status=r.status)  # type: ignore[arg-type]  # CHECKed column
        for r in await repo.get_recipients(conn, email_id)
    ]
    timeline_rows = await repo.get_timeline(conn, email_id)
    timeline = [TimelineEvent(id=e.id, type=e.type, occurred_at=e.occurred_at, data=e.data) for e in timeline_rows]
    content: dict[str, Any] = {}
    if include_content:
        content = {"html": row.html, "text": row.text, "headers": row.headers}
    scheduled_at = scheduling.scheduled_at_of(timeline_rows)
    return EmailDetail(
        **_summary_fields(row), recipients=recipients, events=timeline, **content, scheduled_at=scheduled_at
    )


def _decode_cursor(cursor: str) -> str:
    if not has_prefix(cursor, "msg"):
        raise validation("invalid cursor", "cursor")
    return cursor


def _tag_filter(tag: str | None) -> dict[str, str] | None:
    if tag is None:
        return None
    key, sep, value = tag.partition(":")
    if not sep or not key:
        raise validation("tag filter must be key:value", "tag")
    return {key: value}


async def list_emails(
    conn: Conn,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    to: str | None = None,
    tag: str | None = None,
    domain: str | None = None,
) -> EmailList:
    if not 1 <= limit <= 100:
        raise validation("limit must be between 1 and 100", "limit")
    if status is not None and status not in STATUSES:
        raise validation("unknown status", "status")
    rows = await repo.list_emails(
        conn,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        limit=limit + 1,
        before_id=_decode_cursor(cursor) if cursor else None,
        status=status,
        created_after=created_after,
        created_before=created_before,
        to=to.strip() if to else None,
        tag=_tag_filter(tag),
        domain=domain.strip().lower() if domain else None,
    )
    page = rows[:limit]
    next_cursor = page[-1].id if len(rows) > limit else None
    return EmailList(data=[EmailSummary(**_summary_fields(r)) for r in page], next_cursor=next_cursor)
