"""Webhook endpoint routes (`/v1/webhooks`)."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody

from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, Settings
from mailroom_api.webhooks import service
from mailroom_api.webhooks.schemas import CreatedWebhook, CreateWebhook, Deleted, Webhook, WebhookList


class WebhooksController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    security = TENANT_SECURITY
    opt = TENANT

    @post(
        "/",
        summary="Create a webhook endpoint (secret shown once)",
        responses=documented(400, 401, 403, 409, 422, 503),
    )
    async def create_webhook(
        self, data: JSONBody[CreateWebhook], rt: Rt, settings: Settings, principal: Caller
    ) -> CreatedWebhook:
        return await service.create_webhook(rt.nc, principal.tenant_id, data, rpc_timeout=settings.rpc_timeout_seconds)

    @get("/", summary="List webhook endpoints", responses=documented(401, 403, 503))
    async def list_webhooks(self, rt: Rt, settings: Settings, principal: Caller) -> WebhookList:
        data = await service.list_webhooks(rt.nc, principal.tenant_id, rpc_timeout=settings.rpc_timeout_seconds)
        return WebhookList(data=data)

    @get("/{webhook_id:str}", summary="Get a webhook endpoint", responses=documented(401, 403, 404, 503))
    async def get_webhook(self, webhook_id: FromPath[str], rt: Rt, settings: Settings, principal: Caller) -> Webhook:
        return await service.get_webhook(
            rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds
        )

    @delete(
        "/{webhook_id:str}",
        status_code=200,
        summary="Delete a webhook endpoint",
        responses=documented(401, 403, 404, 503),
    )
    async def delete_webhook(self, webhook_id: FromPath[str], rt: Rt, settings: Settings, principal: Caller) -> Deleted:
        return await service.delete_webhook(
            rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds
        )
