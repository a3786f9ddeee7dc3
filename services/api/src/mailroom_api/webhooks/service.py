"""Webhook endpoints, answered by the webhooks service (it owns endpoints and their secrets).
A path id that cannot be a webhook id (`wh_` + 26 base32 characters) is 404 without asking."""

from __future__ import annotations

import re

import msgspec
from mailroom_contracts import rpc, subjects
from nats.aio.client import Client

from mailroom_api import rpc as calls
from mailroom_api.errors import not_found
from mailroom_api.webhooks.schemas import (
    CreatedWebhook,
    CreateWebhook,
    Deleted,
    Delivery,
    DeliveryAttempt,
    DeliveryList,
    Notice,
    RotatedSecret,
    UpdateWebhook,
    Webhook,
)

# mailroom_kit.ids: prefix, "_", 26 Crockford base32 characters (lower case, no i, l, o, u).
_WEBHOOK_ID = re.compile(r"wh_[0-9a-hjkmnp-tv-z]{26}")
_DELIVERY_ID = re.compile(r"whd_[0-9a-hjkmnp-tv-z]{26}")


def _check_id(webhook_id: str) -> None:
    if not _WEBHOOK_ID.fullmatch(webhook_id):
        raise not_found("webhook")


def _check_delivery_id(delivery_id: str) -> None:
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise not_found("delivery")


def _view(endpoint: rpc.WebhookEndpoint) -> Webhook:
    return Webhook(
        id=endpoint.webhook_id,
        url=endpoint.url,
        events=list(endpoint.events),
        description=endpoint.description,
        enabled=endpoint.enabled,
        created_at=endpoint.created_at,
        disabled_reason=endpoint.disabled_reason,
        disabled_at=endpoint.disabled_at,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
        notices=[Notice(type=n.type, reason=n.reason, created_at=n.created_at) for n in endpoint.notices],
    )


def _delivery(d: rpc.WebhookDelivery, *, with_attempts: bool) -> Delivery:
    return Delivery(
        id=d.delivery_id,
        webhook_id=d.webhook_id,
        event_id=d.event_id,
        event_type=d.event_type,
        status=d.status,
        attempts_count=d.attempts_count,
        created_at=d.created_at,
        next_attempt_at=d.next_attempt_at,
        completed_at=d.completed_at,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        attempts=[DeliveryAttempt(**msgspec.structs.asdict(a)) for a in d.attempts] if with_attempts else msgspec.UNSET,
    )


async def create_webhook(
    nc: Client, tenant_id: str, req: CreateWebhook, *, rpc_timeout: float, format: str = "standard"
) -> CreatedWebhook:
    """`format`: `resend` for endpoints created through /resend (svix-* headers, Resend's payload)."""
    request = rpc.CreateWebhookRequest(
        tenant_id=tenant_id, url=req.url, events=req.events, description=req.description, format=format
    )
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


# ----------------------------------------------------------------------------- issue 19


async def update_webhook(
    nc: Client, tenant_id: str, webhook_id: str, req: UpdateWebhook, *, rpc_timeout: float
) -> Webhook:
    _check_id(webhook_id)
    request = rpc.UpdateWebhookRequest(
        tenant_id=tenant_id,
        webhook_id=webhook_id,
        url=req.url if isinstance(req.url, str) else None,
        events=req.events if isinstance(req.events, list) else None,
        enabled=req.enabled if isinstance(req.enabled, bool) else None,
        description=req.description if isinstance(req.description, str) else None,
        clear_description=req.description is None,
    )
    reply = await calls.call(nc, subjects.RPC_WEBHOOKS_UPDATE, request, rpc.WebhookReply, timeout=rpc_timeout)
    return _view(calls.present(reply.endpoint, "webhooks"))


async def rotate_secret(nc: Client, tenant_id: str, webhook_id: str, *, rpc_timeout: float) -> RotatedSecret:
    _check_id(webhook_id)
    request = rpc.RotateWebhookSecretRequest(tenant_id=tenant_id, webhook_id=webhook_id)
    reply = await calls.call(
        nc, subjects.RPC_WEBHOOKS_ROTATE_SECRET, request, rpc.RotateWebhookSecretReply, timeout=rpc_timeout
    )
    view = _view(calls.present(reply.endpoint, "webhooks"))
    return RotatedSecret(**msgspec.structs.asdict(view), secret=calls.present(reply.secret, "webhooks"))


async def send_test(nc: Client, tenant_id: str, webhook_id: str, *, rpc_timeout: float) -> Delivery:
    _check_id(webhook_id)
    request = rpc.SendTestWebhookRequest(tenant_id=tenant_id, webhook_id=webhook_id)
    reply = await calls.call(nc, subjects.RPC_WEBHOOKS_TEST, request, rpc.WebhookDeliveryReply, timeout=rpc_timeout)
    return _delivery(calls.present(reply.delivery, "webhooks"), with_attempts=False)


async def list_deliveries(
    nc: Client,
    tenant_id: str,
    webhook_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: str | None,
    event_type: str | None,
    rpc_timeout: float,
) -> DeliveryList:
    _check_id(webhook_id)
    request = rpc.ListWebhookDeliveriesRequest(
        tenant_id=tenant_id, webhook_id=webhook_id, limit=limit, cursor=cursor, status=status, event_type=event_type
    )
    reply = await calls.call(
        nc, subjects.RPC_WEBHOOKS_DELIVERIES_LIST, request, rpc.ListWebhookDeliveriesReply, timeout=rpc_timeout
    )
    return DeliveryList(data=[_delivery(d, with_attempts=False) for d in reply.data], next_cursor=reply.next_cursor)


async def get_delivery(
    nc: Client, tenant_id: str, webhook_id: str, delivery_id: str, *, rpc_timeout: float
) -> Delivery:
    return await _one_delivery(
        nc, subjects.RPC_WEBHOOKS_DELIVERIES_GET, tenant_id, webhook_id, delivery_id, rpc_timeout
    )


async def retry_delivery(
    nc: Client, tenant_id: str, webhook_id: str, delivery_id: str, *, rpc_timeout: float
) -> Delivery:
    return await _one_delivery(
        nc, subjects.RPC_WEBHOOKS_DELIVERIES_RETRY, tenant_id, webhook_id, delivery_id, rpc_timeout
    )


async def _one_delivery(
    nc: Client, subject: str, tenant_id: str, webhook_id: str, delivery_id: str, rpc_timeout: float
) -> Delivery:
    _check_id(webhook_id)
    _check_delivery_id(delivery_id)
    request = rpc.WebhookDeliveryRequest(tenant_id=tenant_id, webhook_id=webhook_id, delivery_id=delivery_id)
    reply = await calls.call(nc, subject, request, rpc.WebhookDeliveryReply, timeout=rpc_timeout)
    return _delivery(calls.present(reply.delivery, "webhooks"), with_attempts=True)
