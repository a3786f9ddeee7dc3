"""Request/reply payloads (core NATS request, queue-group responders).

Used only where the API must answer synchronously with data another service owns:
a new domain's DNS records (SES generates the DKIM tokens) and webhook endpoints (the
webhooks service owns them and their secrets). Every reply carries either a result or an
`RpcError` whose `code` is one of the SPEC §2 error codes.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from mailroom_contracts.events import DomainSnapshot


class RpcError(msgspec.Struct, frozen=True, kw_only=True):
    code: str  # SPEC §2 error code: validation_error, not_found, conflict, unavailable, ...
    message: str
    param: str | None = None


class CreateDomainRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    name: str
    mail_from_subdomain: str = "bounce"
    track_opens: bool = False
    track_clicks: bool = False


class DomainReply(msgspec.Struct, frozen=True, kw_only=True):
    domain: DomainSnapshot | None = None
    error: RpcError | None = None


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    webhook_id: str
    tenant_id: str
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool = True
    created_at: datetime


class CreateWebhookRequest(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    url: str
    events: list[str]
    description: str | None = None


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
