"""Webhook endpoint routes (`/v1/webhooks`)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, JSONBody, PathParameter, QueryParameter
from mailroom_contracts.rpc import WEBHOOK_DELIVERY_STATUSES, WEBHOOK_EVENT_TYPES

from mailroom_api.checks import id_pattern
from mailroom_api.http.errors import documented
from mailroom_api.http.guards import TENANT, TENANT_SECURITY, Caller, Rt, Settings
from mailroom_api.webhooks import service
from mailroom_api.webhooks.schemas import (
    CreatedWebhook,
    CreateWebhook,
    Deleted,
    Delivery,
    DeliveryList,
    RotatedSecret,
    UpdateWebhook,
    Webhook,
    WebhookList,
)

WebhookIdPath = Annotated[str, PathParameter(pattern=id_pattern("wh"), description="`wh_…` id")]
DeliveryIdPath = Annotated[str, PathParameter(pattern=id_pattern("whd"), description="`whd_…` id")]
# Every type a filter may name (SPEC §2), as the webhooks service validates them.
EVENT_TYPES = sorted(WEBHOOK_EVENT_TYPES)


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

    # ------------------------------------------------------------------------- issue 19

    @patch(
        "/{webhook_id:str}",
        summary="Change a webhook endpoint (url, events, enabled, description)",
        description="Only the fields given change. The URL is validated as at create. `description: null` "
        "clears it. `enabled: true` re-enables a disabled endpoint (also one disabled for `gone` or "
        "`failing`) and sends what is still pending at once; `enabled: false` pauses it (deliveries wait).",
        responses=documented(400, 401, 403, 404, 422, 503),
    )
    async def update_webhook(
        self, webhook_id: WebhookIdPath, data: JSONBody[UpdateWebhook], rt: Rt, settings: Settings, principal: Caller
    ) -> Webhook:
        return await service.update_webhook(
            rt.nc, principal.tenant_id, webhook_id, data, rpc_timeout=settings.rpc_timeout_seconds
        )

    @post(
        "/{webhook_id:str}/rotate-secret",
        status_code=200,
        summary="Rotate the signing secret (new secret shown once)",
        description="For `MAILROOM_WEBHOOKS_SECRET_ROTATION_OVERLAP_HOURS` (24 h) every delivery carries two "
        "signatures in `webhook-signature` (`v1,<new> v1,<old>`), so a receiver can switch without a gap.",
        responses=documented(401, 403, 404, 503),
    )
    async def rotate_secret(
        self, webhook_id: WebhookIdPath, rt: Rt, settings: Settings, principal: Caller
    ) -> RotatedSecret:
        return await service.rotate_secret(
            rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds
        )

    @post(
        "/{webhook_id:str}/test",
        status_code=202,
        summary="Send a webhook.test event (delivered, signed and retried like any other)",
        description="Whatever the endpoint's filter. 409 `conflict` while it is disabled.",
        responses=documented(401, 403, 404, 409, 503),
    )
    async def send_test(self, webhook_id: WebhookIdPath, rt: Rt, settings: Settings, principal: Caller) -> Delivery:
        return await service.send_test(rt.nc, principal.tenant_id, webhook_id, rpc_timeout=settings.rpc_timeout_seconds)

    @get(
        "/{webhook_id:str}/deliveries",
        summary="List an endpoint's deliveries, newest first",
        responses=documented(401, 403, 404, 422, 503),
    )
    async def list_deliveries(
        self,
        webhook_id: WebhookIdPath,
        rt: Rt,
        settings: Settings,
        principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size")] = 20,
        cursor: Annotated[
            str | None, QueryParameter(pattern=id_pattern("whd"), description="next_cursor of the previous page")
        ] = None,
        status: Annotated[
            str | None, QueryParameter(enum=list(WEBHOOK_DELIVERY_STATUSES), description="delivery status")
        ] = None,
        event_type: Annotated[str | None, QueryParameter(enum=EVENT_TYPES, description="event type")] = None,
    ) -> DeliveryList:
        return await service.list_deliveries(
            rt.nc,
            principal.tenant_id,
            webhook_id,
            limit=limit,
            cursor=cursor,
            status=status,
            event_type=event_type,
            rpc_timeout=settings.rpc_timeout_seconds,
        )

    @get(
        "/{webhook_id:str}/deliveries/{delivery_id:str}",
        summary="Get a delivery with every attempt (status code, latency, error, response body, next retry)",
        responses=documented(401, 403, 404, 503),
    )
    async def get_delivery(
        self, webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath, rt: Rt, settings: Settings, principal: Caller
    ) -> Delivery:
        return await service.get_delivery(
            rt.nc, principal.tenant_id, webhook_id, delivery_id, rpc_timeout=settings.rpc_timeout_seconds
        )

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=202,
        summary="Re-send a delivery now (a new attempt, the same webhook-id)",
        description="409 `conflict` while the endpoint is disabled or the delivery is being attempted.",
        responses=documented(401, 403, 404, 409, 503),
    )
    async def retry_delivery(
        self, webhook_id: WebhookIdPath, delivery_id: DeliveryIdPath, rt: Rt, settings: Settings, principal: Caller
    ) -> Delivery:
        return await service.retry_delivery(
            rt.nc, principal.tenant_id, webhook_id, delivery_id, rpc_timeout=settings.rpc_timeout_seconds
        )
