"""Request and response bodies of the REST API (msgspec Structs; they also drive the OpenAPI document).

Request bodies forbid unknown fields: a misspelt field is a validation error naming it, never
silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

import msgspec

Mode = Literal["live", "test"]
Permission = Literal["full_access", "sending_access"]
TenantStatus = Literal["active", "paused", "blocked"]


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body."""


# --------------------------------------------------------------------------- errors


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    error: str
    message: str
    param: str | None
    request_id: str


# --------------------------------------------------------------------------- tenants (operator)


class CreateTenant(Request, frozen=True, kw_only=True):
    name: str
    monthly_quota: int | None = None
    rate_limit: int | None = None


class UpdateTenant(Request, frozen=True, kw_only=True):
    name: str | msgspec.UnsetType = msgspec.UNSET
    status: TenantStatus | msgspec.UnsetType = msgspec.UNSET
    monthly_quota: int | msgspec.UnsetType | None = msgspec.UNSET
    rate_limit: int | msgspec.UnsetType | None = msgspec.UNSET


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: TenantStatus
    monthly_quota: int | None
    rate_limit: int | None
    created_at: datetime
    updated_at: datetime


class TenantList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Tenant]


# --------------------------------------------------------------------------- API keys


class CreateApiKey(Request, frozen=True, kw_only=True):
    name: str
    mode: Mode = "live"
    permission: Permission = "full_access"
    domain_id: str | None = None


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    mode: Mode
    permission: Permission
    domain_id: str | None
    prefix: str
    last4: str
    created_at: datetime
    revoked_at: datetime | None


class CreatedApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    mode: Mode
    permission: Permission
    domain_id: str | None
    prefix: str
    last4: str
    created_at: datetime
    token: str  # shown once


class ApiKeyList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ApiKey]


# --------------------------------------------------------------------------- emails


class SendEmail(Request, frozen=True, kw_only=True):
    # SPEC §2 fields a later version implements; until then they are refused with a clear message.
    __not_yet_supported__: ClassVar[frozenset[str]] = frozenset(
        {"template", "attachments", "scheduled_at", "track_opens", "track_clicks", "stream"}
    )
    from_: str = msgspec.field(name="from")
    to: str | list[str]
    cc: str | list[str] = []
    bcc: str | list[str] = []
    reply_to: str | list[str] = []
    subject: str
    html: str | None = None
    text: str | None = None
    # Values are checked one by one so errors can name `headers.X-Foo` / `tags.key`.
    headers: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    metadata: dict[str, Any] | None = None


class EmailAccepted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    created_at: datetime


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    type: Literal["to", "cc", "bcc"]
    status: str


class TimelineEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class EmailSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    from_: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    tags: dict[str, str]
    metadata: dict[str, Any] | None
    status: str
    mode: Mode
    created_at: datetime
    last_event_at: datetime


class EmailDetail(EmailSummary, frozen=True, kw_only=True):
    """An email as listed, plus each recipient's status and the ordered timeline."""

    recipients: list[Recipient]
    events: list[TimelineEvent]
    # Only with ?include=content.
    html: str | msgspec.UnsetType | None = msgspec.UNSET
    text: str | msgspec.UnsetType | None = msgspec.UNSET
    headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class EmailList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[EmailSummary]
    next_cursor: str | None


# --------------------------------------------------------------------------- domains


class CreateDomain(Request, frozen=True, kw_only=True):
    name: str
    mail_from_subdomain: str = "bounce"
    track_opens: bool = False
    track_clicks: bool = False


class DomainRecord(msgspec.Struct, frozen=True, kw_only=True):
    purpose: str
    type: str
    name: str
    value: str
    priority: int | None
    required: bool
    status: str


class Domain(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: str
    region: str
    records: list[DomainRecord]
    mail_from_domain: str
    track_opens: bool
    track_clicks: bool
    created_at: datetime
    last_checked_at: datetime | None


class DomainList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Domain]


# --------------------------------------------------------------------------- webhooks


class CreateWebhook(Request, frozen=True, kw_only=True):
    url: str
    events: list[str]
    description: str | None = None


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime


class CreatedWebhook(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    created_at: datetime
    secret: str  # whsec_…, shown once


class WebhookList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Webhook]


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    deleted: bool = True
