"""Webhook endpoint bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from mailroom_contracts.rpc import WEBHOOK_DESCRIPTION_MAX_LENGTH, WEBHOOK_EVENTS_MAX, WEBHOOK_URL_MAX_LENGTH

from mailroom_api.http.body import Request


class CreateWebhook(Request, frozen=True, kw_only=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=WEBHOOK_URL_MAX_LENGTH)]
    events: Annotated[list[str], msgspec.Meta(min_length=1, max_length=WEBHOOK_EVENTS_MAX)]
    description: Annotated[str, msgspec.Meta(max_length=WEBHOOK_DESCRIPTION_MAX_LENGTH)] | None = None


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
