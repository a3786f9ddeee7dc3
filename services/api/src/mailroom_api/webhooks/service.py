"""Webhook endpoints, answered by the webhooks service (it owns endpoints and their secrets).
A path id that cannot be a webhook id (`wh_` + 26 base32 characters) is 404 without asking."""

from __future__ import annotations

import re

import msgspec
from mailroom_contracts import rpc, subjects
from nats.aio.client import Client

from mailroom_api import rpc as calls
from mailroom_api.errors import not_found
from mailroom_api.webhooks.schemas import CreatedWebhook, CreateWebhook, Deleted, Webhook

# mailroom_kit.ids: prefix, "_", 26 Crockford base32 characters (lower case, no i, l, o, u).
_WEBHOOK_ID = re.compile(r"wh_[0-9a-hjkmnp-tv-z]{26}")


def _check_id(webhook_id: str) -> None:
    if not _WEBHOOK_ID.fullmatch(webhook_id):
        raise not_found("webhook")


def _view(endpoint: rpc.WebhookEndpoint) -> Webhook:
    return Webhook(
        id=endpoint.webhook_id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
    )


async def create_webhook(nc: Client, tenant_id: str, req: CreateWebhook, *, rpc_timeout: float) -> CreatedWebhook:
    request = rpc.CreateWebhookRequest(tenant_id=tenant_id, url=req.url, events=req.events, description=req.description)
    reply = await calls.call(nc, subjects.RPC_WEBHOOKS_CREATE, request, rpc.CreateWebhookReply, timeout=rpc_timeout)
    view = _view(calls.present(reply.endpoint, "webhooks"))
    secret = calls.present(reply.secret, "webhooks")
    return CreatedWebhook(**msgspec.structs.asdict(view), secret=secret)


async def list_webhooks(nc: Client, tenant_id: str, *, rpc_timeout: float) -> list[Webhook]:
    request = rpc.ListWebhooksRequest(tenant_id=tenant_id)
    reply = await calls.call(nc, subjects.RPC_WEBHOOKS_LIST, request, rpc.ListWebhooksReply, timeout=rpc_timeout)
    return [_view(e) for e in reply.data]


async def get_webhook(nc: Client, tenant_id: str, webhook_id: str, *, rpc_timeout: float) -> Webhook:
    _check_id(webhook_id)
    request = rpc.GetWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id)
    reply = await calls.call(nc, subjects.RPC_WEBHOOKS_GET, request, rpc.WebhookReply, timeout=rpc_timeout)
    return _view(calls.present(reply.endpoint, "webhooks"))


async def delete_webhook(nc: Client, tenant_id: str, webhook_id: str, *, rpc_timeout: float) -> Deleted:
    _check_id(webhook_id)
    request = rpc.DeleteWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id)
    await calls.call(nc, subjects.RPC_WEBHOOKS_DELETE, request, rpc.WebhookReply, timeout=rpc_timeout)
    return Deleted(id=webhook_id)
