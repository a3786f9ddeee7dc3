"""Webhooks logic: tenant endpoints, fan-out of lifecycle events into deliveries, and the
retry rules that settle each delivery attempt. Callers own the transaction."""

from __future__ import annotations

import collections
import random
import re
from datetime import datetime, timedelta
from typing import Any

import msgspec
from mailroom_contracts import events as ev
from mailroom_contracts.rpc import (
    WEBHOOK_DELIVERY_STATUSES,
    WEBHOOK_DESCRIPTION_MAX_LENGTH,
    WEBHOOK_EVENTS_MAX,
    WEBHOOK_FORMATS,
    CreateWebhookRequest,
    ListWebhookDeliveriesRequest,
    UpdateWebhookRequest,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookNotice,
)
from mailroom_kit import inbox, outbox, tracing
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger

from mailroom_webhooks import repository as repo
from mailroom_webhooks.errors import ConflictError, NotFoundError, ValidationError
from mailroom_webhooks.netpolicy import AddressPolicy, validate_endpoint_url
from mailroom_webhooks.payloads import (
    EMAIL_WEBHOOK_TYPES,
    KNOWN_EVENT_TYPES,
    SUMMARY_EVENTS,
    EmailSummary,
    domain_payload,
    domain_webhook_type,
    email_payload,
    summary_from_queued,
    test_payload,
    unknown_summary,
)
from mailroom_webhooks.signing import SecretBox, new_secret

log = get_logger(__name__)

MAX_DESCRIPTION = WEBHOOK_DESCRIPTION_MAX_LENGTH
MAX_RETRY_AFTER_SECONDS = 24 * 3600
ADDRESS_NOT_ALLOWED = "address_not_allowed"
SCHEMA = "webhooks"  # whose outbox `webhook.disabled` is written to (app.SCHEMA)


# ----------------------------------------------------------------------------- endpoints


def _endpoint(row: dict[str, Any], notices: list[dict[str, Any]] | None = None) -> WebhookEndpoint:
    return WebhookEndpoint(
        webhook_id=row["id"],
        tenant_id=row["tenant_id"],
        url=row["url"],
        events=list(row["events"]),
        description=row["description"],
        enabled=row["enabled"],
        created_at=row["created_at"],
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
        notices=[WebhookNotice(type=n["type"], reason=n["reason"], created_at=n["created_at"]) for n in notices or []],
        format=row["format"],
    )


# kit ids: "wh_" + 26 Crockford base32 characters. Anything else names no endpoint; saying so
# before Postgres sees it keeps a NUL or a megabyte of garbage away from the database.
_WEBHOOK_ID = re.compile(r"wh_[0-9a-hjkmnp-tv-z]{26}")
MAX_TENANT_ID = 64
MAX_EVENTS = WEBHOOK_EVENTS_MAX
# Control characters have no business in a description; NUL is also refused by Postgres text.
# Tab and line breaks are kept: a description is free text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class NewEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A create request that passed every rule, normalised."""

    tenant_id: str
    url: str
    events: list[str]
    description: str | None
    format: str = "standard"


def check_tenant_id(tenant_id: str) -> None:
    """The API sends its authenticated tenant's id; anything unprintable is a caller bug, not a 500."""
    if not tenant_id:
        raise ValidationError("tenant_id is required", param="tenant_id")
    if len(tenant_id) > MAX_TENANT_ID or not tenant_id.isascii() or not tenant_id.isprintable():
        raise ValidationError("tenant_id is not a tenant id", param="tenant_id")


def check_webhook_id(webhook_id: str) -> None:
    if not _WEBHOOK_ID.fullmatch(webhook_id):
        raise NotFoundError("webhook not found", param="webhook_id")


def validate_events(events: list[str]) -> list[str]:
    if not events:
        raise ValidationError('events must list at least one event type, or ["*"]', param="events")
    if len(events) > MAX_EVENTS:
        raise ValidationError(f"events must list at most {MAX_EVENTS} entries", param="events")
    chosen: list[str] = []
    for i, name in enumerate(events):
        if name == "*":
            if len(events) != 1:
                raise ValidationError('"*" must be the only entry of events', param=f"events[{i}]")
        elif name not in KNOWN_EVENT_TYPES:
            shown = name if len(name) <= 64 and name.isprintable() else "(not an event type)"
            raise ValidationError(f"unknown event type {shown!r}", param=f"events[{i}]")
        if name not in chosen:
            chosen.append(name)
    return chosen


def validate_description(description: str | None) -> str | None:
    if description is None:
        return None
    if len(description) > MAX_DESCRIPTION:
        raise ValidationError(f"description must be at most {MAX_DESCRIPTION} characters", param="description")
    if _CONTROL.search(description):
        raise ValidationError("description must not contain control characters (NUL, ...)", param="description")
    return description


def validate_new_endpoint(request: CreateWebhookRequest, *, allow_http: bool, policy: AddressPolicy) -> NewEndpoint:
    """Every rule of a create request, decided before any database call."""
    check_tenant_id(request.tenant_id)
    return NewEndpoint(
        tenant_id=request.tenant_id,
        url=validate_endpoint_url(request.url, allow_http=allow_http, policy=policy),
        events=validate_events(request.events),
        description=validate_description(request.description),
        format=validate_format(request.format),
    )


def validate_format(format: str) -> str:
    if format not in WEBHOOK_FORMATS:
        raise ValidationError(f"format must be one of {', '.join(WEBHOOK_FORMATS)}", param="format")
    return format


async def create_endpoint(conn: Conn, new: NewEndpoint, *, box: SecretBox) -> tuple[WebhookEndpoint, str]:
    """Store a validated endpoint; return it with its secret (the only time it is shown)."""
    secret = new_secret()
    row = await repo.insert_endpoint(
        conn,
        endpoint_id=new_id("wh"),
        tenant_id=new.tenant_id,
        url=new.url,
        events=new.events,
        description=new.description,
        secret_encrypted=box.encrypt(secret),
        format=new.format,
    )
    return _endpoint(row), secret


async def list_endpoints(conn: Conn, tenant_id: str) -> list[WebhookEndpoint]:
    return [_endpoint(row) for row in await repo.list_endpoints(conn, tenant_id)]


async def get_endpoint(conn: Conn, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = await repo.get_endpoint(conn, tenant_id, endpoint_id)
    if row is None:
        raise NotFoundError("webhook not found", param="webhook_id")
    return _endpoint(row, await repo.list_notices(conn, endpoint_id))


async def delete_endpoint(conn: Conn, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = await repo.soft_delete_endpoint(conn, tenant_id, endpoint_id)
    if row is None:
        raise NotFoundError("webhook not found", param="webhook_id")
    await repo.cancel_pending_deliveries(conn, endpoint_id, "endpoint_deleted")
    return _endpoint(row)


# ----------------------------------------------------------------------------- manage (issue 19)


class EndpointChange(msgspec.Struct, frozen=True, kw_only=True):
    """A PATCH that passed every rule: None leaves a field as it is."""

    tenant_id: str
    webhook_id: str
    url: str | None
    events: list[str] | None
    description: str | None
    set_description: bool
    enabled: bool | None


def validate_update(request: UpdateWebhookRequest, *, allow_http: bool, policy: AddressPolicy) -> EndpointChange:
    """Every rule of a PATCH, before any database call: the URL is validated as at create."""
    check_tenant_id(request.tenant_id)
    check_webhook_id(request.webhook_id)
    set_description = request.clear_description or request.description is not None
    return EndpointChange(
        tenant_id=request.tenant_id,
        webhook_id=request.webhook_id,
        url=None if request.url is None else validate_endpoint_url(request.url, allow_http=allow_http, policy=policy),
        events=None if request.events is None else validate_events(request.events),
        description=None if request.clear_description else validate_description(request.description),
        set_description=set_description,
        enabled=request.enabled,
    )


async def update_endpoint(conn: Conn, change: EndpointChange, *, now: datetime) -> WebhookEndpoint:
    before = await repo.get_endpoint(conn, change.tenant_id, change.webhook_id)
    if before is None:
        raise NotFoundError("webhook not found", param="webhook_id")
    row = await repo.update_endpoint(
        conn,
        change.tenant_id,
        change.webhook_id,
        url=change.url,
        events=change.events,
        description=change.description,
        set_description=change.set_description,
        enabled=change.enabled,
    )
    if row is None:  # deleted in between
        raise NotFoundError("webhook not found", param="webhook_id")
    if change.enabled is True and not before["enabled"]:
        # What waited while it was off goes out now (the schedule resumes from there).
        resumed = await repo.resume_pending_deliveries(conn, change.webhook_id, now=now)
        await repo.notify_deliveries(conn)
        log.info("webhook.endpoint_enabled", webhook_id=change.webhook_id, resumed=resumed)
    return _endpoint(row, await repo.list_notices(conn, change.webhook_id))


async def rotate_secret(
    conn: Conn, tenant_id: str, endpoint_id: str, *, box: SecretBox, overlap_seconds: float, now: datetime
) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned once); the old one keeps signing beside it for `overlap_seconds`."""
    secret = new_secret()
    row = await repo.rotate_secret(
        conn,
        tenant_id,
        endpoint_id,
        secret_encrypted=box.encrypt(secret),
        previous_expires_at=now + timedelta(seconds=overlap_seconds),
    )
    if row is None:
        raise NotFoundError("webhook not found", param="webhook_id")
    return _endpoint(row), secret


async def send_test_event(conn: Conn, tenant_id: str, endpoint_id: str, *, now: datetime) -> WebhookDelivery:
    """Queue a `webhook.test` delivery to this endpoint (whatever its filter: it was asked for)."""
    enabled = await repo.endpoint_enabled(conn, tenant_id, endpoint_id)
    if enabled is None:
        raise NotFoundError("webhook not found", param="webhook_id")
    if not enabled:
        raise ConflictError("the webhook is disabled; enable it (PATCH enabled: true) to send a test event")
    delivery_id, event_id = new_id("whd"), new_id("evt")
    await repo.insert_delivery(
        conn,
        delivery_id=delivery_id,
        endpoint_id=endpoint_id,
        tenant_id=tenant_id,
        event_id=event_id,
        event_type="webhook.test",
        payload=test_payload(event_id, endpoint_id, now),
        due_at=now,
        trace_context=tracing.context_text(),  # the RPC's span, child of the API request's
    )
    await repo.notify_deliveries(conn)
    row = await repo.get_delivery(conn, endpoint_id, delivery_id)
    assert row is not None
    return _delivery(row)


# ----------------------------------------------------------------------------- the delivery log

_DELIVERY_ID = re.compile(r"whd_[0-9a-hjkmnp-tv-z]{26}")
MAX_PAGE = 100


def check_delivery_id(delivery_id: str) -> None:
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise NotFoundError("delivery not found", param="delivery_id")


def validate_list_deliveries(request: ListWebhookDeliveriesRequest) -> None:
    check_tenant_id(request.tenant_id)
    check_webhook_id(request.webhook_id)
    if not 1 <= request.limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}", param="limit")
    if request.cursor is not None and not _DELIVERY_ID.fullmatch(request.cursor):
        raise ValidationError("invalid cursor", param="cursor")
    if request.status is not None and request.status not in WEBHOOK_DELIVERY_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(WEBHOOK_DELIVERY_STATUSES)}", param="status")
    if request.event_type is not None and request.event_type not in KNOWN_EVENT_TYPES:
        raise ValidationError("unknown event type", param="event_type")


def _delivery(row: dict[str, Any], attempts: list[dict[str, Any]] | None = None) -> WebhookDelivery:
    return WebhookDelivery(
        delivery_id=row["id"],
        webhook_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        status=row["status"],
        attempts_count=row["attempts"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
        completed_at=row["completed_at"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        attempts=[msgspec.convert(a, WebhookDeliveryAttempt) for a in attempts or []],
    )


async def _own_endpoint(conn: Conn, tenant_id: str, endpoint_id: str) -> bool:
    enabled = await repo.endpoint_enabled(conn, tenant_id, endpoint_id)
    if enabled is None:
        raise NotFoundError("webhook not found", param="webhook_id")
    return enabled


async def list_deliveries(
    conn: Conn, request: ListWebhookDeliveriesRequest
) -> tuple[list[WebhookDelivery], str | None]:
    await _own_endpoint(conn, request.tenant_id, request.webhook_id)
    rows = await repo.list_deliveries(
        conn,
        request.webhook_id,
        limit=request.limit + 1,
        before_id=request.cursor,
        status=request.status,
        event_type=request.event_type,
    )
    page = rows[: request.limit]
    return [_delivery(r) for r in page], (page[-1]["id"] if len(rows) > request.limit else None)


async def get_delivery(conn: Conn, tenant_id: str, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
    await _own_endpoint(conn, tenant_id, endpoint_id)
    row = await repo.get_delivery(conn, endpoint_id, delivery_id)
    if row is None:
        raise NotFoundError("delivery not found", param="delivery_id")
    return _delivery(row, await repo.list_attempts(conn, delivery_id))


async def retry_delivery(
    conn: Conn, tenant_id: str, endpoint_id: str, delivery_id: str, *, now: datetime
) -> WebhookDelivery:
    """Re-send now: a new attempt of the same delivery (same event id, so the same webhook-id).
    A failed one that fails again stays failed (past its last scheduled attempt) or goes on with
    the schedule where it left off."""
    enabled = await _own_endpoint(conn, tenant_id, endpoint_id)
    row = await repo.get_delivery(conn, endpoint_id, delivery_id)
    if row is None:
        raise NotFoundError("delivery not found", param="delivery_id")
    if not enabled:
        raise ConflictError("the webhook is disabled; enable it (PATCH enabled: true) to retry deliveries")
    row = await repo.retry_delivery_now(conn, endpoint_id, delivery_id, now=now)
    if row is None:
        raise ConflictError("the delivery is being attempted right now")
    await repo.notify_deliveries(conn)
    return _delivery(row, await repo.list_attempts(conn, delivery_id))


# ----------------------------------------------------------------------------- fan-out


async def _fan_out(conn: Conn, event: ev.Event, webhook_type: str, payload: bytes, *, order_key: str) -> int:
    created = 0
    trace_context = tracing.context_text()  # the consumer's span of this message (None when off)
    for endpoint_id in await repo.subscribed_endpoint_ids(conn, event.tenant_id, webhook_type):
        created += await repo.insert_delivery(
            conn,
            delivery_id=new_id("whd"),
            endpoint_id=endpoint_id,
            tenant_id=event.tenant_id,
            event_id=event.event_id,
            event_type=webhook_type,
            payload=payload,
            order_key=order_key,
            trace_context=trace_context,
        )
    if created:
        await repo.notify_deliveries(conn)
    return created


class EmailEventInput(msgspec.Struct, frozen=True):
    """One lifecycle event of a batch, whether a missing summary is still worth waiting for, and
    the W3C context of its message's span (stored with its deliveries; None when tracing is off)."""

    event: ev.EmailEvent
    wait_for_summary: bool = True
    trace_context: str | None = None


async def handle_email_events(conn: Conn, batch: list[EmailEventInput], *, consumer: str) -> list[int | None]:
    """Record the summaries (EmailQueued) and queue one delivery per subscribed endpoint for a
    batch of email events (in delivery order), with a fixed number of statements whatever its
    size: the EmailQueued summaries, the summaries the others need, the inbox claim, the tenants'
    endpoints, the deliveries (and one NOTIFY). Returns per event the number of deliveries created
    (0 for a redelivered event or a type that is not a webhook), or None for a lifecycle event
    whose EmailQueued was not recorded yet while `wait_for_summary`: that one claimed and wrote
    nothing (retry it). Once the caller gave up waiting, it goes out without from/to/subject."""
    await repo.insert_email_summaries(
        conn,
        [(summary_from_queued(x.event), x.event.created_at) for x in batch if isinstance(x.event, SUMMARY_EVENTS)],
    )
    wanted = [
        x.event.email_id
        for x in batch
        if type(x.event) in EMAIL_WEBHOOK_TYPES and not isinstance(x.event, SUMMARY_EVENTS)
    ]
    recorded = {(r["email_id"], r["tenant_id"]): r for r in await repo.get_email_summaries(conn, wanted)}
    results: list[int | None] = [0] * len(batch)
    pending: list[tuple[int, ev.EmailEvent, EmailSummary]] = []
    contexts = {x.event.event_id: x.trace_context for x in batch}
    for i, x in enumerate(batch):
        event = x.event
        if type(event) not in EMAIL_WEBHOOK_TYPES:
            continue
        if isinstance(event, SUMMARY_EVENTS):
            summary = summary_from_queued(event)
        elif (row := recorded.get((event.email_id, event.tenant_id))) is not None:
            summary = msgspec.convert(row, EmailSummary)
        elif x.wait_for_summary:
            results[i] = None
            continue
        else:
            log.warning("webhook.summary_missing", email_id=event.email_id, detail="delivering a partial payload")
            summary = unknown_summary(event)
        pending.append((i, event, summary))
    claimed = await inbox.claim_many(conn, consumer, [event.event_id for _, event, _ in pending])
    fresh: list[tuple[int, ev.EmailEvent, EmailSummary]] = []
    for i, event, summary in pending:
        if event.event_id in claimed:
            claimed.discard(event.event_id)  # the same id again later in the batch is a redelivery
            fresh.append((i, event, summary))
    endpoints = await repo.live_endpoints(conn, [event.tenant_id for _, event, _ in fresh])
    deliveries: list[repo.NewDelivery] = []
    for _, event, summary in fresh:
        webhook_type = EMAIL_WEBHOOK_TYPES[type(event)]
        subscribed = [
            e["id"]
            for e in endpoints
            if e["tenant_id"] == event.tenant_id and (webhook_type in e["events"] or "*" in e["events"])
        ]
        if not subscribed:
            continue
        payload = email_payload(event, summary)
        deliveries.extend(
            repo.NewDelivery(
                delivery_id=new_id("whd"),
                endpoint_id=endpoint_id,
                tenant_id=event.tenant_id,
                event_id=event.event_id,
                event_type=webhook_type,
                payload=payload,
                order_key=event.email_id,  # an endpoint gets one email's events in this order
                trace_context=contexts[event.event_id],
            )
            for endpoint_id in subscribed
        )
    created = collections.Counter(await repo.insert_deliveries(conn, deliveries))
    for i, event, _ in fresh:
        results[i] = created[event.event_id]
    if created:
        await repo.notify_deliveries(conn)
    return results


async def handle_domain_event(conn: Conn, event: ev.Event, *, consumer: str) -> int:
    if not isinstance(event, ev.DomainEvent):
        return 0
    webhook_type = domain_webhook_type(event)
    if webhook_type is None:
        return 0
    if not await inbox.claim(conn, consumer, event.event_id):
        return 0
    return await _fan_out(
        conn, event, webhook_type, domain_payload(event, webhook_type), order_key=event.domain.domain_id
    )


# ----------------------------------------------------------------------------- delivery attempts


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery this worker holds the lease on, for attempt number `attempt`."""

    delivery_id: str
    endpoint_id: str
    tenant_id: str
    event_id: str
    event_type: str
    payload: bytes
    attempt: int
    url: str
    secret_encrypted: str
    # The secret before the last rotation while it still signs (a second signature), else None.
    previous_secret_encrypted: str | None = None
    manual: bool = False  # the tenant asked for this attempt (POST …/retry)
    # W3C context of the span that created the delivery (the email's trace), for the POST span.
    trace_context: str | None = None
    format: str = "standard"  # the endpoint's (WEBHOOK_FORMATS): how the attempt is shaped and signed


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True):
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None  # None on success
    retry_after: float | None = None  # seconds the endpoint asked us to wait
    response_body: str | None = None  # the first 4 KiB the endpoint answered

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


async def claim_due(
    conn: Conn, *, limit: int, per_endpoint: int, lease_seconds: float, now: datetime | None = None
) -> list[Claim]:
    rows = await repo.claim_due_deliveries(
        conn, now=now, limit=limit, per_endpoint=per_endpoint, lease_seconds=lease_seconds
    )
    return [
        Claim(
            delivery_id=r["id"],
            endpoint_id=r["endpoint_id"],
            tenant_id=r["tenant_id"],
            event_id=r["event_id"],
            event_type=r["event_type"],
            payload=bytes(r["payload"]),
            attempt=r["attempts"],
            url=r["url"],
            secret_encrypted=r["secret_encrypted"],
            previous_secret_encrypted=r["previous_secret_encrypted"],
            manual=r["manual"],
            trace_context=r["trace_context"],
            format=r["format"],
        )
        for r in rows
    ]


def retry_delay(
    attempt: int, schedule: list[float], retry_after: float | None, *, max_retry_after: float = MAX_RETRY_AFTER_SECONDS
) -> float:
    """Delay before attempt `attempt + 1`: the schedule (last entry repeats) ±10 % jitter; a longer
    Retry-After (capped at `max_retry_after`, a day by default) wins."""
    base = schedule[min(attempt, len(schedule)) - 1]
    delay = base * random.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return delay


class RetryRules(msgspec.Struct, frozen=True, kw_only=True):
    """How attempts are settled (from the settings)."""

    max_attempts: int
    schedule: list[float]
    max_retry_after: float = MAX_RETRY_AFTER_SECONDS
    disable_after_failing_seconds: float = 5 * 86400.0


async def settle_attempt(conn: Conn, claim: Claim, result: AttemptResult, *, rules: RetryRules, now: datetime) -> str:
    """Record the attempt and move the delivery on. Returns the outcome:
    succeeded | retry | failed | gone | refused | lost (our lease had expired).

    A success ends the endpoint's run of failures; a failure starts or continues it, and one
    that long (`disable_after_failing_seconds`) disables the endpoint. 410 Gone disables it at
    once. Either way its pending deliveries stay pending: enabling it again (PATCH) resumes them."""
    next_retry_at: datetime | None = None
    if result.succeeded:
        outcome = "succeeded"
        kept = await repo.finish_delivery(
            conn,
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
            status="succeeded",
            status_code=result.status_code,
            error=None,
            now=now,
        )
    elif result.error == ADDRESS_NOT_ALLOWED or result.status_code == 410 or claim.attempt >= rules.max_attempts:
        outcome = (
            "refused" if result.error == ADDRESS_NOT_ALLOWED else "gone" if result.status_code == 410 else "failed"
        )
        kept = await repo.finish_delivery(
            conn,
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
            status="failed",
            status_code=result.status_code,
            error=result.error,
            now=now,
        )
    else:
        outcome = "retry"
        next_retry_at = await repo.reschedule_delivery(
            conn,
            delivery_id=claim.delivery_id,
            attempt=claim.attempt,
            delay_seconds=retry_delay(
                claim.attempt, rules.schedule, result.retry_after, max_retry_after=rules.max_retry_after
            ),
            status_code=result.status_code,
            error=result.error,
            now=now,
        )
        kept = next_retry_at is not None
    await repo.insert_attempt(
        conn,
        delivery_id=claim.delivery_id,
        endpoint_id=claim.endpoint_id,
        attempt=claim.attempt,
        started_at=result.started_at,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
        error=result.error,
        next_retry_at=next_retry_at,
        response_body=result.response_body,
        manual=claim.manual,
    )
    if not kept:
        return "lost"  # the lease was taken over: the endpoint's state is the new holder's to change
    if result.succeeded:
        await repo.note_success(conn, claim.endpoint_id)
    elif result.status_code == 410:
        # 410 Gone: the tenant removed the receiver; stop sending to it at all.
        await _disable(conn, claim, result, "gone", now=now)
    else:
        run = await repo.note_failure(conn, claim.endpoint_id, now=now)
        if (
            run is not None
            and run["enabled"]
            and (now - run["failing_since"]).total_seconds() >= rules.disable_after_failing_seconds
        ):
            await _disable(conn, claim, result, "failing", now=now)
    return outcome


async def _disable(
    conn: Conn, claim: Claim, result: AttemptResult, reason: ev.WebhookDisabledReason, *, now: datetime
) -> None:
    """Disable the endpoint (if still enabled): the notice the API shows and, in the same
    transaction, a `webhook.disabled` event in the outbox for the event stream (exactly once)."""
    off = await repo.disable_endpoint(conn, claim.endpoint_id, reason, now=now)
    if off is None:
        return  # already disabled (by another replica's attempt, or by the tenant)
    await outbox.add(
        conn,
        ev.WebhookDisabled(
            event_id=new_id("evt"),
            occurred_at=off["disabled_at"],
            tenant_id=off["tenant_id"],
            webhook_id=claim.endpoint_id,
            reason=reason,
            disabled_at=off["disabled_at"],
            failing_since=off["failing_since"] if reason == "failing" else None,
            last_status_code=result.status_code,
            last_error=result.error,
        ),
        schema=SCHEMA,
    )
    log.warning("webhook.endpoint_disabled", webhook_id=claim.endpoint_id, reason=reason)
