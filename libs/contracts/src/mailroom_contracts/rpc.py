"""Request/reply payloads (core NATS request, queue-group responders).

Used only where the API must answer synchronously with data another service owns:
a new domain's DNS records (SES generates the DKIM tokens) and webhook endpoints (the
webhooks service owns them and their secrets). Every reply carries either a result or an
`RpcError` whose `code` is one of the SPEC §2 error codes and whose `kind` says which class of
error it is, so the requester knows the HTTP status (and whether to retry) without knowing the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, get_args

import msgspec

from mailroom_contracts.events import DomainSnapshot

# The classes of RPC error, each one SPEC §2 status on the API: validation 422, not_found 404,
# conflict 409, forbidden 403, transient 503 (a dependency is down; retry), internal 500 (a bug;
# retrying will not help and the requester must not say "try again").
ErrorKind = Literal["validation", "not_found", "conflict", "forbidden", "transient", "internal"]
ERROR_KINDS: Final[frozenset[str]] = frozenset(get_args(ErrorKind))

# The class each SPEC code belongs to when a reply names no `kind` (replies of older responders).
KIND_OF_CODE: Final[dict[str, ErrorKind]] = {
    "validation_error": "validation",
    "not_found": "not_found",
    "conflict": "conflict",
    "insufficient_permission": "forbidden",
    "unavailable": "transient",
    "internal": "internal",
}


class RpcError(msgspec.Struct, frozen=True, kw_only=True):
    code: str  # SPEC §2 error code: validation_error, not_found, conflict, unavailable, ...
    message: str
    param: str | None = None
    # One of ERROR_KINDS. A plain string, not the Literal, so a newer responder's new class still
    # decodes on an older requester (which then maps by `code`); None from responders before it.
    kind: str | None = None


def rpc_error(kind: ErrorKind, code: str, message: str, param: str | None = None) -> RpcError:
    """An RpcError whose class is checked by the type checker."""
    return RpcError(code=code, message=message, param=param, kind=kind)


class CreateDomainRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    mail_from_subdomain: str = "bounce"
    track_opens: bool = False
    track_clicks: bool = False
    # Issue 18: the SES region of the identity; None = the domains service's default region.
    region: str | None = None


class DomainReply(msgspec.Struct, frozen=True, kw_only=True):
    domain: DomainSnapshot | None = None
    error: RpcError | None = None
    # Issue 18: occurred_at of the event the change was published with (update, delete), so the
    # requester's read model orders the reply's snapshot against that event's redelivery.
    event_at: datetime | None = None


class WebhookNotice(msgspec.Struct, frozen=True, kw_only=True):
    """Something the tenant is told about an endpoint: `webhook.disabled` with its reason."""

    type: str
    reason: str
    created_at: datetime


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    tenant_id: str
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool = True
    created_at: datetime
    # Issue 19 (later fields, defaults keep older replies decodable).
    disabled_reason: str | None = None  # gone (answered 410) | failing (failed for days) | manual
    disabled_at: datetime | None = None
    # Until then the secret before the last rotation still signs (a second `v1,` signature).
    previous_secret_expires_at: datetime | None = None
    notices: list[WebhookNotice] = []  # newest first, at most 20
    # Issue 21: how deliveries are shaped and signed (WEBHOOK_FORMATS); older replies decode as standard.
    format: str = "standard"


# Limits of a webhook endpoint, enforced by the webhooks service and documented (and checked first)
# by the API, so both ends state the same numbers.
WEBHOOK_URL_MAX_LENGTH = 2048
WEBHOOK_DESCRIPTION_MAX_LENGTH = 512
WEBHOOK_EVENTS_MAX = 64
# Issue 21: `standard` (Standard Webhooks headers, Mailroom's payload) or `resend` (svix-* headers,
# Resend's payload shape), chosen at create (endpoints created through /resend are `resend`).
WEBHOOK_FORMATS: Final = ("standard", "resend")


class CreateWebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    url: str
    events: list[str]
    description: str | None = None
    format: str = "standard"  # issue 21: one of WEBHOOK_FORMATS; the default keeps old requests valid


class CreateWebhookReply(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: WebhookEndpoint | None = None
    secret: str | None = None  # whsec_…, returned once
    error: RpcError | None = None


class ListWebhooksRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str


class ListWebhooksReply(msgspec.Struct, frozen=True, kw_only=True):
    data: list[WebhookEndpoint] = []
    error: RpcError | None = None


class GetWebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    webhook_id: str


class DeleteWebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    webhook_id: str


class WebhookReply(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: WebhookEndpoint | None = None
    error: RpcError | None = None


# ----------------------------------------------------------------------------- webhooks (issue 19)

# Every webhook type a tenant's filter may name (SPEC §2): the webhooks service validates filters
# against it and the api documents it (one list, here, for both).
WEBHOOK_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    {
        "email.queued",
        "email.scheduled",
        "email.sent",
        "email.delivered",
        "email.delivery_delayed",
        "email.bounced",
        "email.complained",
        "email.opened",
        "email.clicked",
        "email.failed",
        "email.suppressed",
        "email.unsubscribed",
        "email.canceled",
        "domain.verified",
        "domain.temporary_failure",
        "domain.failed",
        "webhook.test",
    }
)
WEBHOOK_DELIVERY_STATUSES: Final = ("pending", "in_flight", "succeeded", "failed", "canceled")
WEBHOOK_RESPONSE_BODY_MAX_BYTES: Final = 4096


class UpdateWebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    """PATCH: only the fields given change. `description` is cleared with `clear_description`."""

    tenant_id: str
    webhook_id: str
    url: str | None = None
    events: list[str] | None = None
    enabled: bool | None = None
    description: str | None = None
    clear_description: bool = False


class RotateWebhookSecretRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    webhook_id: str


class RotateWebhookSecretReply(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: WebhookEndpoint | None = None
    secret: str | None = None  # the new whsec_…, returned once
    error: RpcError | None = None


class WebhookDeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    started_at: datetime
    status_code: int | None = None
    latency_ms: int
    error: str | None = None  # the error class: http_500, timeout, connect_error, address_not_allowed, …
    response_body: str | None = None  # at most WEBHOOK_RESPONSE_BODY_MAX_BYTES of what the endpoint answered
    next_retry_at: datetime | None = None
    manual: bool = False  # asked for with POST …/retry


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    webhook_id: str
    event_id: str  # also the webhook-id header, the same on every attempt
    event_type: str
    status: str  # one of WEBHOOK_DELIVERY_STATUSES
    attempts_count: int
    created_at: datetime
    next_attempt_at: datetime | None = None  # pending only
    completed_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    attempts: list[WebhookDeliveryAttempt] = []  # oldest first; filled by get, not by list


class SendTestWebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    webhook_id: str


class ListWebhookDeliveriesRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    webhook_id: str
    limit: int = 20
    cursor: str | None = None  # a whd_ id: deliveries older than it
    status: str | None = None
    event_type: str | None = None


class ListWebhookDeliveriesReply(msgspec.Struct, frozen=True, kw_only=True):
    data: list[WebhookDelivery] = []
    next_cursor: str | None = None
    error: RpcError | None = None


class WebhookDeliveryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Get or retry one delivery of one endpoint."""

    tenant_id: str
    webhook_id: str
    delivery_id: str


class WebhookDeliveryReply(msgspec.Struct, frozen=True, kw_only=True):
    delivery: WebhookDelivery | None = None
    error: RpcError | None = None


# Issue 18: one domain of a tenant (another tenant's id answers not_found).


class VerifyDomainRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Check the domain now (its next check is due at once); replies with its current snapshot."""

    tenant_id: str
    domain_id: str


class UpdateDomainRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Change the domain's tracking defaults; a None field is left as it is."""

    tenant_id: str
    domain_id: str
    track_opens: bool | None = None
    track_clicks: bool | None = None


class DeleteDomainRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Delete the domain and its SES identity; replies with its last snapshot."""

    tenant_id: str
    domain_id: str


# ----------------------------------------------------------------------------- sender (issue 23)


class SendingStatusRequest(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /admin/v1/sending`: what the sending governor holds. No fields (any replica answers
    from the sender's database, so every replica gives the same, whole answer)."""


class SendingStream(msgspec.Struct, frozen=True, kw_only=True):
    stream: str  # transactional | broadcast
    held: bool  # the governor holds this stream's mail now
    reason: str | None = None  # why, when held: daily_quota
    waiting: int = 0  # this stream's emails in the sender's queue (paused tenants' not counted)


class SendingTenant(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    # Emails of this tenant in the sender's queue, by reason: tenant_paused (held until the tenant
    # is resumed), queued (waiting for the daily quota, a retry's backoff, a send-rate token or
    # its round-robin turn). Only reasons with at least one email.
    held: dict[str, int] = {}


class SendingStatusReply(msgspec.Struct, frozen=True, kw_only=True):
    # SES GetAccount as last read (the shared governor row); < 0 = unlimited.
    max_send_rate: float | None = None
    max_24_hour_send: float | None = None
    sent_last_24_hours: float | None = None
    refreshed_at: datetime | None = None
    transactional_reserve: float | None = None  # share of the send rate kept for transactional mail
    broadcast_hold_share: float | None = None  # broadcast is held at this share of Max24HourSend
    streams: list[SendingStream] = []
    tenants: list[SendingTenant] = []  # most emails first, at most 100
    error: RpcError | None = None
