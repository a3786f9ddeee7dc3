"""Webhook endpoint bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from mailroom_contracts.rpc import (
    WEBHOOK_DESCRIPTION_MAX_LENGTH,
    WEBHOOK_EVENTS_MAX,
    WEBHOOK_URL_MAX_LENGTH,
)

from mailroom_api.http.body import Request


class CreateWebhook(Request, frozen=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=WEBHOOK_URL_MAX_LENGTH)]
    events: Annotated[list[str], msgspec.Meta(min_length=1, max_length=WEBHOOK_EVENTS_MAX)]
    description: Annotated[str, msgspec.Meta(max_length=WEBHOOK_DESCRIPTION_MAX_LENGTH)] | None = None


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """`webhook.disabled` with its reason: `gone` (the endpoint answered 410) or `failing` (it
    failed continuously for the configured window, 5 days by default)."""

    type: str
    reason: str
    created_at: datetime


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    # Why it is disabled (`gone`, `failing`, `manual`) and since when; null while enabled.
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    # After rotate-secret: until then the previous secret still signs (a second signature).
    previous_secret_expires_at: datetime | None = None
    notices: list[Notice] = []


class UpdateWebhook(Request, frozen=True, kw_only=True):
    """Only the fields given change; `description: null` clears it; `enabled: true` resumes what
    is still pending."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=WEBHOOK_URL_MAX_LENGTH)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    events: Annotated[list[str], msgspec.Meta(min_length=1, max_length=WEBHOOK_EVENTS_MAX)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    description: Annotated[str, msgspec.Meta(max_length=WEBHOOK_DESCRIPTION_MAX_LENGTH)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )


class RotatedSecret(Webhook, frozen=True, kw_only=True):
    secret: str  # the new whsec_…, shown once


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    started_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None  # http_500, timeout, connect_error, address_not_allowed, …; null on success
    response_body: str | None  # the first 4 KiB the endpoint answered
    next_retry_at: datetime | None
    manual: bool  # asked for with POST …/retry


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # whd_…
    webhook_id: str
    event_id: str  # the webhook-id header, the same on every attempt
    event_type: str
    status: str  # pending | in_flight | succeeded | failed | canceled
    attempts_count: int
    created_at: datetime
    next_attempt_at: datetime | None
    completed_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempts: list[DeliveryAttempt] | msgspec.UnsetType = msgspec.UNSET  # on GET one delivery


class DeliveryList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Delivery]
    next_cursor: str | None


class CreatedWebhook(Webhook, frozen=True, kw_only=True):
    secret: str  # whsec_…, shown once


class WebhookList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Webhook]


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    deleted: bool = True
