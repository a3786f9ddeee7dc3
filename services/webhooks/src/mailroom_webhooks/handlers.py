"""Thin edges: RPC responders and JetStream message handlers. Each opens the transaction,
calls the service, and maps the service's errors to RPC errors or consumer outcomes (a message
that is not the kind of event its consumer follows is `Permanent`: it is dead-lettered). Message
handlers add their fields to the kit's one `message.handled` line with `note` (`item.note` in the
email consumer's batch handler, which applies a whole fetch in one transaction)."""

from __future__ import annotations

import structlog
from mailroom_contracts.events import DomainEvent, EmailEvent, Event
from mailroom_contracts.rpc import (
    CreateWebhookReply,
    CreateWebhookRequest,
    DeleteWebhookRequest,
    GetWebhookRequest,
    ListWebhookDeliveriesReply,
    ListWebhookDeliveriesRequest,
    ListWebhooksReply,
    ListWebhooksRequest,
    RotateWebhookSecretReply,
    RotateWebhookSecretRequest,
    SendTestWebhookRequest,
    UpdateWebhookRequest,
    WebhookDeliveryReply,
    WebhookDeliveryRequest,
    WebhookReply,
)
from mailroom_contracts.streams import WEBHOOKS_DOMAINS, WEBHOOKS_EMAIL
from mailroom_kit import tracing
from mailroom_kit.consumer import BatchItem, Permanent, note
from mailroom_kit.db import Pool
from mailroom_kit.logging import get_logger
from nats.aio.msg import Msg
from psycopg import OperationalError
from psycopg_pool import PoolTimeout

from mailroom_webhooks import service
from mailroom_webhooks.dispatcher import Clock, system_clock
from mailroom_webhooks.errors import Unavailable, WebhooksError
from mailroom_webhooks.netpolicy import AddressPolicy
from mailroom_webhooks.settings import WebhooksSettings
from mailroom_webhooks.signing import SecretBox

log = get_logger(__name__)

# Postgres unreachable: the requester gets `unavailable` (retryable), not `internal`.
_DB_DOWN = (OperationalError, PoolTimeout)
_UNAVAILABLE = Unavailable("webhooks storage is unavailable; try again").to_rpc()


class RpcHandlers:
    """Responders for mailroom.rpc.webhooks.* (the API owns the HTTP surface; we own the data)."""

    def __init__(
        self,
        pool: Pool,
        settings: WebhooksSettings,
        box: SecretBox,
        policy: AddressPolicy,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._box = box
        self._policy = policy
        self._clock = clock

    # Each responder decides on its input first (validation_error / not_found), so bad input is
    # answered the same whether or not Postgres is up, and never reaches it.

    async def create_endpoint(self, request: CreateWebhookRequest) -> CreateWebhookReply:
        try:
            new = service.validate_new_endpoint(request, allow_http=self._settings.allow_http, policy=self._policy)
            async with self._pool.connection() as conn, conn.transaction():
                endpoint, secret = await service.create_endpoint(conn, new, box=self._box)
        except WebhooksError as exc:
            return CreateWebhookReply(error=exc.to_rpc())
        except _DB_DOWN:
            return CreateWebhookReply(error=_UNAVAILABLE)
        structlog.contextvars.bind_contextvars(webhook_id=endpoint.webhook_id)  # rides on rpc.handled
        return CreateWebhookReply(endpoint=endpoint, secret=secret)

    async def list_endpoints(self, request: ListWebhooksRequest) -> ListWebhooksReply:
        try:
            service.check_tenant_id(request.tenant_id)
            async with self._pool.connection() as conn:
                return ListWebhooksReply(data=await service.list_endpoints(conn, request.tenant_id))
        except WebhooksError as exc:
            return ListWebhooksReply(error=exc.to_rpc())
        except _DB_DOWN:
            return ListWebhooksReply(error=_UNAVAILABLE)

    async def get_endpoint(self, request: GetWebhookRequest) -> WebhookReply:
        try:
            service.check_tenant_id(request.tenant_id)
            service.check_webhook_id(request.webhook_id)
            async with self._pool.connection() as conn:
                return WebhookReply(endpoint=await service.get_endpoint(conn, request.tenant_id, request.webhook_id))
        except WebhooksError as exc:
            return WebhookReply(error=exc.to_rpc())
        except _DB_DOWN:
            return WebhookReply(error=_UNAVAILABLE)

    async def delete_endpoint(self, request: DeleteWebhookRequest) -> WebhookReply:
        try:
            service.check_tenant_id(request.tenant_id)
            service.check_webhook_id(request.webhook_id)
            async with self._pool.connection() as conn, conn.transaction():
                endpoint = await service.delete_endpoint(conn, request.tenant_id, request.webhook_id)
        except WebhooksError as exc:
            return WebhookReply(error=exc.to_rpc())
        except _DB_DOWN:
            return WebhookReply(error=_UNAVAILABLE)
        structlog.contextvars.bind_contextvars(webhook_id=request.webhook_id)  # rides on rpc.handled
        return WebhookReply(endpoint=endpoint)

    # ------------------------------------------------------------------------- issue 19

    async def update_endpoint(self, request: UpdateWebhookRequest) -> WebhookReply:
        try:
            change = service.validate_update(request, allow_http=self._settings.allow_http, policy=self._policy)
            async with self._pool.connection() as conn, conn.transaction():
                endpoint = await service.update_endpoint(conn, change, now=self._clock())
        except WebhooksError as exc:
            return WebhookReply(error=exc.to_rpc())
        except _DB_DOWN:
            return WebhookReply(error=_UNAVAILABLE)
        structlog.contextvars.bind_contextvars(webhook_id=request.webhook_id)
        return WebhookReply(endpoint=endpoint)

    async def rotate_secret(self, request: RotateWebhookSecretRequest) -> RotateWebhookSecretReply:
        try:
            service.check_tenant_id(request.tenant_id)
            service.check_webhook_id(request.webhook_id)
            async with self._pool.connection() as conn, conn.transaction():
                endpoint, secret = await service.rotate_secret(
                    conn,
                    request.tenant_id,
                    request.webhook_id,
                    box=self._box,
                    overlap_seconds=self._settings.secret_rotation_overlap_hours * 3600.0,
                    now=self._clock(),
                )
        except WebhooksError as exc:
            return RotateWebhookSecretReply(error=exc.to_rpc())
        except _DB_DOWN:
            return RotateWebhookSecretReply(error=_UNAVAILABLE)
        structlog.contextvars.bind_contextvars(webhook_id=request.webhook_id)
        return RotateWebhookSecretReply(endpoint=endpoint, secret=secret)

    async def send_test(self, request: SendTestWebhookRequest) -> WebhookDeliveryReply:
        try:
            service.check_tenant_id(request.tenant_id)
            service.check_webhook_id(request.webhook_id)
            async with self._pool.connection() as conn, conn.transaction():
                delivery = await service.send_test_event(conn, request.tenant_id, request.webhook_id, now=self._clock())
        except WebhooksError as exc:
            return WebhookDeliveryReply(error=exc.to_rpc())
        except _DB_DOWN:
            return WebhookDeliveryReply(error=_UNAVAILABLE)
        structlog.contextvars.bind_contextvars(webhook_id=request.webhook_id, delivery_id=delivery.delivery_id)
        return WebhookDeliveryReply(delivery=delivery)

    async def list_deliveries(self, request: ListWebhookDeliveriesRequest) -> ListWebhookDeliveriesReply:
        try:
            service.validate_list_deliveries(request)
            async with self._pool.connection() as conn:
                data, next_cursor = await service.list_deliveries(conn, request)
        except WebhooksError as exc:
            return ListWebhookDeliveriesReply(error=exc.to_rpc())
        except _DB_DOWN:
            return ListWebhookDeliveriesReply(error=_UNAVAILABLE)
        return ListWebhookDeliveriesReply(data=data, next_cursor=next_cursor)

    async def get_delivery(self, request: WebhookDeliveryRequest) -> WebhookDeliveryReply:
        try:
            self._check_delivery_request(request)
            async with self._pool.connection() as conn:
                delivery = await service.get_delivery(conn, request.tenant_id, request.webhook_id, request.delivery_id)
        except WebhooksError as exc:
            return WebhookDeliveryReply(error=exc.to_rpc())
        except _DB_DOWN:
            return WebhookDeliveryReply(error=_UNAVAILABLE)
        return WebhookDeliveryReply(delivery=delivery)

    async def retry_delivery(self, request: WebhookDeliveryRequest) -> WebhookDeliveryReply:
        try:
            self._check_delivery_request(request)
            async with self._pool.connection() as conn, conn.transaction():
                delivery = await service.retry_delivery(
                    conn, request.tenant_id, request.webhook_id, request.delivery_id, now=self._clock()
                )
        except WebhooksError as exc:
            return WebhookDeliveryReply(error=exc.to_rpc())
        except _DB_DOWN:
            return WebhookDeliveryReply(error=_UNAVAILABLE)
        structlog.contextvars.bind_contextvars(webhook_id=request.webhook_id, delivery_id=request.delivery_id)
        return WebhookDeliveryReply(delivery=delivery)

    @staticmethod
    def _check_delivery_request(request: WebhookDeliveryRequest) -> None:
        service.check_tenant_id(request.tenant_id)
        service.check_webhook_id(request.webhook_id)
        service.check_delivery_id(request.delivery_id)


class EventHandlers:
    """Handlers for the WEBHOOKS_EMAIL and WEBHOOKS_DOMAINS durable consumers."""

    def __init__(self, pool: Pool, settings: WebhooksSettings) -> None:
        self._pool = pool
        self._settings = settings

    async def on_email_events(self, items: list[BatchItem]) -> None:
        """The WEBHOOKS_EMAIL batch handler: every email event of one fetch in one transaction."""
        # The wait for a missing summary ends on its own, before the consumer would dead-letter it.
        waits = min(self._settings.summary_wait_attempts, WEBHOOKS_EMAIL.max_deliveries - 1)
        mine: list[BatchItem] = []
        batch: list[service.EmailEventInput] = []
        for item in items:
            if isinstance(item.event, EmailEvent):
                mine.append(item)
                with tracing.use(item.span):  # its own message's span, stored with its deliveries
                    trace_context = tracing.context_text()
                batch.append(
                    service.EmailEventInput(
                        item.event, wait_for_summary=item.delivery < waits, trace_context=trace_context
                    )
                )
            else:
                item.permanent(f"{item.event.__struct_config__.tag} is not an email event")
        if not batch:
            return
        async with self._pool.connection() as conn, conn.transaction():
            results = await service.handle_email_events(conn, batch, consumer=WEBHOOKS_EMAIL.durable)
        for item, created in zip(mine, results, strict=True):
            if created is None:
                # Usually the EmailQueued is a moment behind (in a batch handled beside this one):
                # retry soon, then twice as long each time (≤ 60 s), so the whole wait stays long.
                delay = min(self._settings.summary_retry_seconds * 2 ** (item.delivery - 1), 60.0)
                item.retry("email summary not recorded yet", delay=delay)
            else:
                item.note(deliveries=created)

    async def on_domain_event(self, event: Event, msg: Msg) -> None:
        if not isinstance(event, DomainEvent):
            raise Permanent(f"{event.__struct_config__.tag} is not a domain event")
        async with self._pool.connection() as conn, conn.transaction():
            created = await service.handle_domain_event(conn, event, consumer=WEBHOOKS_DOMAINS.durable)
        note(deliveries=created)
