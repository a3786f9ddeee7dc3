"""Webhook endpoint bodies."""

from __future__ import annotations

from datetime import datetime

import msgspec

from mailroom_api.http.body import Request


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


class CreatedWebhook(Webhook, frozen=True, kw_only=True):
    secret: str  # whsec_…, shown once


class WebhookList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Webhook]


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    deleted: bool = True
