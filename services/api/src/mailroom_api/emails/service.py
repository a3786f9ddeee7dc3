"""Accepting emails and reading the email log.

Accepting: the tenant may send (not paused/blocked), the request is valid, and the from-domain is
allowed (a live key needs a verified domain of the tenant; a key limited to a domain only sends
from it). The email, its recipients, the `queued` timeline entry and the EmailQueued event are then
written in the caller's transaction, so a 202 is visible at once and nothing is half-accepted.
`prepare_email` is the pure half (validation, the log row, the event), `accept_email` the write;
a batch prepares its items one by one (`prepare_batch`) and writes the accepted ones together
(`accept_batch`). Under an Idempotency-Key (`send_email_once`, `accept_batch(key=)`) the key's
record, holding the answer, is written by the same statement as the email(s); a key already
recorded gets that answer again (or 409 for another body).
Reading: a key sees only its own tenant's emails of its own mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from mailroom_contracts import encode, events, subject_for
from mailroom_contracts.message import INVITE_CONTENT_TYPE, INVITE_FILENAME, html_to_text, wire_address
from mailroom_kit import tracing
from mailroom_kit.db import Conn, single_statement
from mailroom_kit.ids import has_prefix, new_id
from nats.js import JetStreamContext

from mailroom_api.auth.service import Principal
from mailroom_api.emails import content as stored_content
from mailroom_api.emails import repository as repo
from mailroom_api.emails import scheduling
from mailroom_api.emails.accept_group import AcceptGroups, Alone
from mailroom_api.emails.idempotency import KEY_PARAM, IdempotencyKey
from mailroom_api.emails.schemas import (
    AttachmentInfo,
    BatchItem,
    BatchResult,
    EmailAccepted,
    EmailDetail,
    EmailList,
    EmailSummary,
    EmailTemplate,
    Recipient,
    SendBatch,
    SendEmail,
    TimelineEvent,
)
from mailroom_api.emails.status import STATUSES
from mailroom_api.emails.validation import ValidEmail, validate_send
from mailroom_api.errors import ApiError, forbidden, not_found, unavailable, validation
from mailroom_api.http.body import msgspec_param
from mailroom_api.limits import service as limits
from mailroom_api.unsubscribe.tokens import UnsubscribeLinks, Unsubscriber

if TYPE_CHECKING:
    from mailroom_api.templates.service import RenderedTemplate

SCHEMA = "api"


# ----------------------------------------------------------------------------- monthly quota (issue 23)


def _usage(principal: Principal, prepared: Iterable[PreparedEmail]) -> repo.UsageCount:
    """What accepting `prepared` adds to the month's count: its live recipients, the suppressed
    ones left out (they are never sent); a test key counts against nothing."""
    if principal.mode != "live":
        return repo.NO_USAGE
    emails = list(prepared)
    if not emails:
        return repo.NO_USAGE
    recipients = sum(sum(1 for address, _ in p.recipients if address.lower() not in p.suppressed) for p in emails)
    return repo.UsageCount(
        month=limits.month_of(emails[0].row.created_at), recipients=recipients, quota=principal.monthly_quota
    )


def _quota_exceeded(principal: Principal) -> ApiError:
    return limits.quota_exceeded(principal.monthly_quota or 0, datetime.now(UTC))


def _queued_event(
    principal: Principal,
    email_id: str,
    email: ValidEmail,
    now: datetime,
    unsubscribe: tuple[str, str | None] | None = None,
) -> events.EmailQueued:
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
        attachments=email.attachments,
        ical_event=email.ical_event,
        # streams and tracking: the sender's configuration set; broadcast's unsubscribe links
        stream=email.stream,
        track_opens=email.track_opens,
        track_clicks=email.track_clicks,
        unsubscribe_url=unsubscribe[0] if unsubscribe else None,
        unsubscribe_mailto=unsubscribe[1] if unsubscribe else None,
        scheduled_at=scheduled_at,
    )


def _unsubscribe(
    links: UnsubscribeLinks | None, principal: Principal, email_id: str, email: ValidEmail
) -> tuple[str, str | None] | None:
    """A broadcast email's one-click links, naming its one recipient (see validation)."""
    if email.stream != "broadcast":
        return None
    if links is None:
        raise validation(
            "the broadcast stream is not enabled on this server (the operator sets MAILROOM_API_UNSUBSCRIBE_SECRET"
            " and MAILROOM_API_PUBLIC_URL)",
            "stream",
        )
    who = Unsubscriber(
        tenant_id=principal.tenant_id,
        mode="test" if principal.mode == "test" else "live",
        email_id=email_id,
        # ASCII (punycode domain), so the token, and the URL, stay short enough for one header line.
        address=wire_address(email.to[0].email),
    )
    return links.for_recipient(who)


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
        attachments=attachment_log(email),
        template_id=email.template_id,
        template_version=email.template_version,
    )


def attachment_log(email: ValidEmail) -> list[dict[str, Any]]:
    """What `include=content` lists for the attachments (the sender adds invite.ics)."""
    listed = [
        {"filename": a.filename, "size": len(a.content), "content_type": a.content_type, "content_id": a.content_id}
        for a in email.attachments
    ]
    if email.ical_event is not None:
        size = len(email.ical_event.encode("utf-8"))
        listed.append({"filename": INVITE_FILENAME, "size": size, "content_type": INVITE_CONTENT_TYPE})
    return listed


@dataclass(frozen=True)
class PreparedEmail:
    """An email ready to be written: validated, with its log row and its EmailQueued event. Built
    without I/O (`prepare_email`); written by `accept_email` (one) or `accept_batch` (many). A new
    send field goes into ValidEmail, `_log_row` and `_queued_event`: both paths then carry it."""

    email: ValidEmail
    row: repo.EmailRow
    event: events.EmailQueued
    payload: bytes  # the event, encoded once
    timeline_type: str = "queued"  # the first timeline entry's type
    # Set by `offload_large`: the object holding the content the event then only refers to.
    content: events.ContentRef | None = None
    # Scheduling: what a scheduled email's accept writes besides (emails/scheduling.py).
    schedule: repo.ScheduledAccept | None = None
    # Issue 22: its recipients (lower-cased) on the suppression list, written with status
    # `suppressed` and left out of the EmailQueued (so the sender never sends to them).
    suppressed: frozenset[str] = frozenset()
    # Issue 22: their EmailSuppressed (with each one's reason), written to the outbox by the accept.
    suppressed_event: events.EmailSuppressed | None = None

    @property
    def recipients(self) -> list[tuple[str, str]]:
        email = self.email
        return [
            (a.email, kind) for kind, group in (("to", email.to), ("cc", email.cc), ("bcc", email.bcc)) for a in group
        ]

    @property
    def accepted(self) -> EmailAccepted:
        return EmailAccepted(id=self.row.id, status=self.row.status, created_at=self.row.created_at)


def prepare_email(
    principal: Principal,
    req: SendEmail,
    *,
    max_message_bytes: int,
    now: datetime | None = None,
    email_id: str | None = None,
    unsubscribe_links: UnsubscribeLinks | None = None,
    rendered: RenderedTemplate | None = None,
) -> PreparedEmail:
    """Validate `req` (ApiError 422/413 naming the field) and build what accepting it writes;
    `unsubscribe_links` signs broadcast emails' links (None: the broadcast stream is off).
    `rendered` (issue 17): the send's template, rendered; its subject/html/text fill the request's
    missing ones before validation, so every send rule applies to the rendered content."""
    if rendered is not None:
        req = rendered.apply(req)
    email = validate_send(
        req,
        max_message_bytes=max_message_bytes,
        default_from=principal.default_from,
        domain_tracking=principal.domain_tracking,
    )
    if rendered is not None:
        email = replace(email, template_id=rendered.template_id, template_version=rendered.version)
    now = now or datetime.now(UTC)
    email_id = email_id or new_id("msg")
    event = _queued_event(principal, email_id, email, now, _unsubscribe(unsubscribe_links, principal, email_id, email))
    return _prepared(principal, email, event, now)


def _prepared(
    principal: Principal,
    email: ValidEmail,
    event: events.EmailQueued,
    now: datetime,
) -> PreparedEmail:
    row = _log_row(principal, event.email_id, email, now)
    if email.scheduled_at is not None:  # scheduling (emails/scheduling.py)
        schedule = scheduling.scheduled_accept(event, now)
        return PreparedEmail(
            email=email,
            row=row,
            event=event,
            payload=encode(event),
            timeline_type="scheduled",
            schedule=schedule,
        )
    return PreparedEmail(email=email, row=row, event=event, payload=encode(event))


# ----------------------------------------------------------------------------- suppressions (issue 22)


def recipients_suppressed() -> ApiError:
    return forbidden("recipient_suppressed", "every recipient of this email is on the suppression list")


def suppress(principal: Principal, prepared: PreparedEmail, suppressed: dict[str, str]) -> PreparedEmail:
    """`prepared` without its recipients in `suppressed` (lower-cased addresses on the tenant's list
    of its mode → their entry's reason): they are written with status `suppressed`, left out of the
    EmailQueued (so the sender never sends to them) and named, with the reason, by an EmailSuppressed
    the accept writes to the outbox. 403 `recipient_suppressed` when that is every recipient."""
    if not suppressed:
        return prepared
    if all(address.lower() in suppressed for address, _ in prepared.recipients):
        raise recipients_suppressed()

    def kept(valid: list[Any], group: list[events.Address]) -> list[events.Address]:
        # By position: the event's address is the wire (ASCII) form of the validated one.
        return [a for v, a in zip(valid, group, strict=True) if v.email.lower() not in suppressed]

    ev, email = prepared.event, prepared.email
    event = msgspec.structs.replace(ev, to=kept(email.to, ev.to), cc=kept(email.cc, ev.cc), bcc=kept(email.bcc, ev.bcc))
    # (The content stays as it is: an offloaded email's event refers to its object still.)
    schedule = None if prepared.schedule is None else scheduling.scheduled_accept(event, prepared.row.created_at)
    return replace(
        prepared,
        event=event,
        payload=encode(event),
        schedule=schedule,
        suppressed=frozenset(suppressed),
        suppressed_event=suppressed_event(ev, prepared.recipients, suppressed, prepared.row.created_at),
    )


def suppressed_event(
    queued: events.EmailQueued, recipients: list[tuple[str, str]], suppressed: dict[str, str], at: datetime
) -> events.EmailSuppressed:
    """The EmailSuppressed of an email's dropped recipients, at its accept."""
    dropped = [(a, r) for a, _ in recipients if (r := suppressed.get(a.lower())) is not None]
    return scheduling.suppressed_notice(queued, dropped, at)


def _outbox_row(event: events.Event | None) -> repo.OutboxRow | None:
    if event is None:
        return None
    return repo.OutboxRow(event_id=event.event_id, subject=subject_for(event), payload=encode(event))


async def check_suppressions(conn: Conn, principal: Principal, prepared: PreparedEmail) -> PreparedEmail:
    """`suppress` with the recipients found on the list; no query when the list is empty (the
    cached principal knows), so a plain send of such a tenant costs nothing more."""
    if not principal.has_suppressions:
        return prepared
    addresses = sorted({address.lower() for address, _ in prepared.recipients})
    found = await repo.suppressed_among(conn, principal.tenant_id, principal.mode, addresses)
    return suppress(principal, prepared, found)


def prepare_send(
    principal: Principal,
    req: SendEmail,
    *,
    max_message_bytes: int,
    unsubscribe_links: UnsubscribeLinks | None = None,
    rendered: RenderedTemplate | None = None,
) -> PreparedEmail:
    """A single send's checks without I/O: the tenant may send, and `prepare_email`."""
    principal.require_may_send()
    return prepare_email(
        principal, req, max_message_bytes=max_message_bytes, unsubscribe_links=unsubscribe_links, rendered=rendered
    )


# ----------------------------------------------------------------------------- large content


async def offload_large(prepared: PreparedEmail, *, js: JetStreamContext, threshold: int) -> PreparedEmail:
    """An email whose encoded event is over `threshold` bytes has its content put in the object
    store (emails/content.py) and carries a reference instead; any other is returned as it is, at
    the cost of one length comparison. Call it before taking a database connection; 503 when the
    store cannot take the content (nothing was accepted)."""
    if len(prepared.payload) <= threshold:
        return prepared
    light, payload, ref = await stored_content.offload(prepared.event, js=js)
    return replace(prepared, event=light, payload=payload, content=ref)


def nothing_written(exc: BaseException) -> bool:
    """Whether an accept that raised `exc` certainly wrote nothing: a refusal, or an error the server
    answered the statement with (an autocommit statement that fails is rolled back). A lost
    connection (OperationalError) may have lost the answer of a statement that committed."""
    return isinstance(exc, ApiError) or repo.statement_failed(exc)


async def discard_content(js: JetStreamContext, prepared: Iterable[PreparedEmail]) -> None:
    """Delete the objects of emails that were NOT written (refused, or a replay answered instead).
    Only then: an email whose statement may have committed keeps its object (an orphan expires
    with the bucket's max age)."""
    for p in prepared:
        await stored_content.discard(js, p.content)


def _domain_refusal(domain: str, *, allowed: bool) -> ApiError:
    if not allowed:
        return forbidden("from_domain_not_allowed", "this API key may only send from its own domain")
    return forbidden("domain_not_verified", f"{domain} is not a verified domain of this account")


async def accept_email(
    conn: Conn, principal: Principal, prepared: PreparedEmail, *, idempotency: repo.IdempotencyRecord | None = None
) -> repo.Acceptance:
    """Write one prepared email (one statement); 403 when its from-domain is refused. With
    `idempotency`, `key_recorded` False means a live record of that key exists and nothing was
    written (the caller replays it)."""
    accepted = await repo.accept_email(
        conn,
        prepared.row,
        recipients=prepared.recipients,
        key_domain_id=principal.domain_id,
        needs_verified_domain=principal.mode == "live",
        event_id=prepared.event.event_id,
        outbox_subject=subject_for(prepared.event),
        payload=prepared.payload,
        timeline_type=prepared.timeline_type,
        idempotency=idempotency,
        schedule=prepared.schedule,
        suppressed=prepared.suppressed,
        usage=_usage(principal, [prepared]),
        suppressed_event=_outbox_row(prepared.suppressed_event),
    )
    if not accepted.within_quota:
        raise _quota_exceeded(principal)
    if accepted.key_recorded and not (accepted.domain_allowed and accepted.domain_verified):
        raise _domain_refusal(prepared.row.from_domain, allowed=accepted.domain_allowed)
    return accepted


def groupable(principal: Principal, prepared: PreparedEmail) -> bool:
    """Whether a send may be written in a group (emails/accept_group.py): the plain case, with no
    suppression list to check (issue 22) and no schedule."""
    return not principal.has_suppressions and prepared.schedule is None and not prepared.suppressed


async def accept_grouped(groups: AcceptGroups, principal: Principal, prepared: PreparedEmail) -> None:
    """`accept_email` for a `groupable` send, written in one statement with others that arrive
    meanwhile; the same answers (403 for a refused from-domain, 429 over the quota), and alone
    when its group could not be written as one."""
    accepted = await groups.accept(
        repo.GroupedEmail(
            row=prepared.row,
            recipients=prepared.recipients,
            key_domain_id=principal.domain_id,
            needs_verified_domain=principal.mode == "live",
            event_id=prepared.event.event_id,
            outbox_subject=subject_for(prepared.event),
            payload=prepared.payload,
            usage=_usage(principal, [prepared]),
            trace_context=tracing.context_text(),
        )
    )
    if isinstance(accepted, Alone):
        async with groups.pool.connection() as conn, single_statement(conn):
            await accept_email(conn, principal, prepared)
        return
    if not (accepted.domain_allowed and accepted.domain_verified):
        raise _domain_refusal(prepared.row.from_domain, allowed=accepted.domain_allowed)


async def send_email(
    conn: Conn,
    principal: Principal,
    req: SendEmail,
    *,
    max_message_bytes: int,
    unsubscribe_links: UnsubscribeLinks | None = None,
) -> EmailAccepted:
    """Accept one small email (see the module docstring); `max_message_bytes` bounds the built
    message. One statement writes it all or, when the from-domain is refused, nothing. (The HTTP
    route does the same in steps: `prepare_send`, `offload_large`, `accept_email`.)"""
    prepared = prepare_send(principal, req, max_message_bytes=max_message_bytes, unsubscribe_links=unsubscribe_links)
    prepared = await check_suppressions(conn, principal, prepared)
    await accept_email(conn, principal, prepared)
    return prepared.accepted


# ----------------------------------------------------------------------------- Idempotency-Key

# A record that vanished between the write that found it and the read of it (it expired in
# between) is looked for again; this bounds how often.
_KEY_ATTEMPTS = 3


@dataclass(frozen=True)
class Answer:
    """A response of an idempotent request: the one first given for its key, or a fresh one."""

    status_code: int
    body: bytes
    replayed: bool
    written: bool  # emails were written by this request (wake the relay)
    written_ids: frozenset[str] = frozenset()  # which (a batch writes some of its items)
    queued: int | None = None  # a batch's counts, for the request's log line
    failed: int | None = None


def _replay(stored: repo.StoredAnswer, key: IdempotencyKey) -> Answer:
    if stored.endpoint != key.endpoint or stored.body_sha256 != key.body_sha256:
        raise ApiError(
            409,
            "idempotency_conflict",
            "this Idempotency-Key was already used with another request body or endpoint; use a new key",
            param=KEY_PARAM,
        )
    return Answer(status_code=stored.status_code, body=stored.response, replayed=True, written=False)


def _record(key: IdempotencyKey, status_code: int, body: bytes, ttl_seconds: int) -> repo.IdempotencyRecord:
    """What the accept statement records for `key`: the answer it gives now."""
    return repo.IdempotencyRecord(
        key=key.key,
        endpoint=key.endpoint,
        body_sha256=key.body_sha256,
        status_code=status_code,
        response=body,
        ttl_seconds=ttl_seconds,
    )


def _in_progress() -> ApiError:
    return ApiError(
        409,
        "idempotency_in_progress",
        "another request with this Idempotency-Key is being processed; retry shortly",
        param=KEY_PARAM,
    )


async def accept_email_once(
    conn: Conn, principal: Principal, prepared: PreparedEmail, key: IdempotencyKey, *, ttl_seconds: int
) -> Answer:
    """`accept_email` under an Idempotency-Key: the email and the key's record (this 202) are one
    statement; a key already recorded replays its answer (or 409 for another body/endpoint)."""
    if principal.has_suppressions:  # issue 22; a key answered before replays even if now all are suppressed
        try:
            prepared = await check_suppressions(conn, principal, prepared)
        except ApiError:
            stored = await repo.find_idempotency_key(conn, principal.tenant_id, principal.mode, key.key)
            if stored is not None:
                return _replay(stored, key)
            raise
    body = msgspec.json.encode(prepared.accepted)
    record = _record(key, 202, body, ttl_seconds)
    for _ in range(_KEY_ATTEMPTS):
        accepted = await accept_email(conn, principal, prepared, idempotency=record)
        if accepted.key_recorded:
            return Answer(
                status_code=202, body=body, replayed=False, written=True, written_ids=frozenset({prepared.row.id})
            )
        stored = await repo.find_idempotency_key(conn, principal.tenant_id, principal.mode, key.key)
        if stored is not None:
            return _replay(stored, key)
        if not (accepted.domain_allowed and accepted.domain_verified):
            raise _domain_refusal(prepared.row.from_domain, allowed=accepted.domain_allowed)
    raise _in_progress()


# ----------------------------------------------------------------------------- batch


def _item_request(item: Any) -> SendEmail:
    """One batch item as a single send's body; ApiError 422 naming the field within the item."""
    if not isinstance(item, dict):
        raise validation("each item must be an email object", None)
    try:
        return msgspec.convert(item, SendEmail)
    except msgspec.ValidationError as exc:
        message, param = msgspec_param(exc)
        if param in SendEmail.__not_yet_supported__:
            message = f"`{param}` is part of the API but not supported by this version of Mailroom yet"
        raise validation(message, param) from None


def _failure(index: int, error: ApiError) -> BatchItem:
    return BatchItem(index=index, error=error.code, message=error.message, param=error.param)


async def _domain_verdicts(conn: Conn, principal: Principal, names: set[str]) -> dict[str, ApiError | None]:
    """Per from-domain: None if the principal may send from it, else the single send's 403."""
    needs_verified = principal.mode == "live"
    if not names or (principal.domain_id is None and not needs_verified):
        return dict.fromkeys(names)
    states = await repo.domain_states(conn, principal.tenant_id, sorted(names))
    verdicts: dict[str, ApiError | None] = {}
    for name in names:
        mine = [d for d in states if d.name == name]
        allowed = principal.domain_id is None or any(d.id == principal.domain_id for d in mine)
        verified = not needs_verified or any(d.status == "verified" for d in mine)
        verdicts[name] = None if allowed and verified else _domain_refusal(name, allowed=allowed)
    return verdicts


@dataclass(frozen=True)
class PreparedBatch:
    """A batch's items, each prepared or refused (`failures`), before any I/O."""

    count: int
    prepared: dict[int, PreparedEmail]
    failures: dict[int, BatchItem]


def prepare_batch(
    principal: Principal,
    req: SendBatch,
    *,
    max_message_bytes: int,
    unsubscribe_links: UnsubscribeLinks | None = None,
    rendered: Mapping[int, RenderedTemplate | ApiError] | None = None,
) -> PreparedBatch:
    """Each item validated on its own, with the single send's rules (its errors become item
    failures); the tenant's status refuses the whole batch. No I/O: call it before taking a
    database connection (100 items are milliseconds of CPU). `rendered` (issue 17): per item
    index, its template rendered, or the error that item fails with (templates.render_batch)."""
    principal.require_may_send()
    now = datetime.now(UTC)
    # Ids rise with the index (ids made in one millisecond are otherwise in random order), so the
    # log lists a batch's emails in the order they were given.
    ids = sorted(new_id("msg") for _ in req.emails)
    failures: dict[int, BatchItem] = {}
    prepared: dict[int, PreparedEmail] = {}
    for index, item in enumerate(req.emails):
        try:
            template = rendered.get(index) if rendered else None
            if isinstance(template, ApiError):
                raise template
            prepared[index] = prepare_email(
                principal,
                _item_request(item),
                max_message_bytes=max_message_bytes,
                now=now,
                email_id=ids[index],
                unsubscribe_links=unsubscribe_links,
                rendered=template,
            )
        except ApiError as exc:
            failures[index] = _failure(index, exc)
    return PreparedBatch(count=len(req.emails), prepared=prepared, failures=failures)


async def offload_batch(batch: PreparedBatch, *, js: JetStreamContext, threshold: int) -> PreparedBatch:
    """`offload_large` for each prepared item (before taking a database connection); when the store
    fails for one, the objects already written for the others are deleted again (503)."""
    prepared: dict[int, PreparedEmail] = {}
    try:
        for i, p in batch.prepared.items():
            prepared[i] = await offload_large(p, js=js, threshold=threshold)
    except ApiError:
        await discard_content(js, prepared.values())
        raise
    return replace(batch, prepared=prepared)


async def accept_batch(
    conn: Conn,
    principal: Principal,
    batch: PreparedBatch,
    *,
    key: IdempotencyKey | None = None,
    ttl_seconds: int = 0,
) -> Answer:
    """Accept a prepared batch: from-domain refusals become item failures; every accepted item is
    written by one statement (one outbox batch), with the key's record when there is a key; a
    batch that accepts nothing writes nothing, a key included."""
    prepared, failures = batch.prepared, batch.failures
    if principal.has_suppressions:  # issue 22: per item, with one query for the whole batch
        prepared, failures = await _suppress_batch(conn, principal, prepared, failures)
    writes = {
        i: repo.BatchEmail(
            row=p.row,
            recipients=p.recipients,
            event_id=p.event.event_id,
            outbox_subject=subject_for(p.event),
            payload=p.payload,
            timeline_type=p.timeline_type,
            schedule=p.schedule,
            suppressed=p.suppressed,
            suppressed_event=_outbox_row(p.suppressed_event),
        )
        for i, p in prepared.items()
    }
    for _ in range(_KEY_ATTEMPTS):
        verdicts = await _domain_verdicts(conn, principal, {p.row.from_domain for p in prepared.values()})
        accepted = {i: p for i, p in prepared.items() if verdicts[p.row.from_domain] is None}
        refused = {i: _failure(i, error) for i, p in prepared.items() if (error := verdicts[p.row.from_domain])}
        body = msgspec.json.encode(_batch_result(batch.count, accepted, {**failures, **refused}))
        queued, failed = len(accepted), batch.count - len(accepted)
        if not accepted:
            if key is not None:
                stored = await repo.find_idempotency_key(conn, principal.tenant_id, principal.mode, key.key)
                if stored is not None:
                    return _replay(stored, key)
            return Answer(status_code=200, body=body, replayed=False, written=False, queued=queued, failed=failed)
        record = None
        if key is not None:
            record = _record(key, 200, body, ttl_seconds)
        outcome = await repo.accept_emails(
            conn,
            [writes[i] for i in accepted],
            tenant_id=principal.tenant_id,
            mode=principal.mode,
            key_domain_id=principal.domain_id,
            needs_verified_domain=principal.mode == "live",
            idempotency=record,
            usage=_usage(principal, accepted.values()),
        )
        if not outcome.within_quota:  # issue 23: the whole batch, as its items are one statement
            raise _quota_exceeded(principal)
        if outcome.key_recorded:
            ids = frozenset(p.row.id for p in accepted.values())
            return Answer(
                status_code=200, body=body, replayed=False, written=True, written_ids=ids, queued=queued, failed=failed
            )
        if key is not None:
            stored = await repo.find_idempotency_key(conn, principal.tenant_id, principal.mode, key.key)
            if stored is not None:
                return _replay(stored, key)
        # A from-domain changed since it was read (or the key's record expired just then): again.
    raise _in_progress() if key is not None else unavailable("the sending domains changed while accepting; try again")


async def _suppress_batch(
    conn: Conn, principal: Principal, prepared: dict[int, PreparedEmail], failures: dict[int, BatchItem]
) -> tuple[dict[int, PreparedEmail], dict[int, BatchItem]]:
    """`suppress` for each item: an item whose every recipient is suppressed fails on its own."""
    addresses = sorted({a.lower() for p in prepared.values() for a, _ in p.recipients})
    found = await repo.suppressed_among(conn, principal.tenant_id, principal.mode, addresses)
    if not found:
        return prepared, failures
    kept: dict[int, PreparedEmail] = {}
    failures = dict(failures)
    for i, p in prepared.items():
        try:
            kept[i] = suppress(
                principal, p, {a.lower(): found[a.lower()] for a, _ in p.recipients if a.lower() in found}
            )
        except ApiError as exc:
            failures[i] = _failure(i, exc)
    return kept, failures


def _batch_result(count: int, accepted: dict[int, PreparedEmail], failures: dict[int, BatchItem]) -> BatchResult:
    data: list[BatchItem] = []
    for index in range(count):
        prepared = accepted.get(index)
        if prepared is not None:
            data.append(BatchItem(index=index, id=prepared.row.id, status=prepared.row.status))
        else:
            data.append(failures[index])
    return BatchResult(data=data, queued=len(accepted), failed=count - len(accepted))


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
        "opens": row.opens,
        "clicks": row.clicks,
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
        content = {
            "html": row.html,
            # As sent: the sender generates a missing text from the html, with the same function.
            "text": row.text if row.text is not None or row.html is None else html_to_text(row.html),
            "headers": row.headers,
            "attachments": [AttachmentInfo(**a) for a in row.attachments],
            "content_expired_at": row.content_purged_at,
        }
    scheduled_at = scheduling.scheduled_at_of(timeline_rows)
    template = None  # issue 17
    if row.template_id is not None and row.template_version is not None:
        template = EmailTemplate(id=row.template_id, version=row.template_version)
    return EmailDetail(
        **_summary_fields(row),
        recipients=recipients,
        events=timeline,
        **content,
        scheduled_at=scheduled_at,
        template=template,
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
    newer_than: str | None = None,
) -> EmailList:
    """Newest first, the page older than `cursor`; or (`newer_than`, an id) the page just newer
    than that email, whose `next_cursor` is then its newest id if there are newer ones still."""
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
        after_id=_decode_cursor(newer_than) if newer_than else None,
    )
    more = len(rows) > limit
    if newer_than:
        page = rows[1:] if more else rows
        next_cursor = page[0].id if more else None
    else:
        page = rows[:limit]
        next_cursor = page[-1].id if more else None
    return EmailList(data=[EmailSummary(**_summary_fields(r)) for r in page], next_cursor=next_cursor)
