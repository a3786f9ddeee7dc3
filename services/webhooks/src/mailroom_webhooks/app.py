"""Builds the webhooks service from settings: RPC responders, the two durable consumers, the
delivery dispatcher and the outbox relay, behind the kit's ops HTTP app."""

from __future__ import annotations

import ssl
from pathlib import Path

from mailroom_contracts import subjects
from mailroom_contracts.rpc import (
    CreateWebhookRequest,
    DeleteWebhookRequest,
    GetWebhookRequest,
    ListWebhookDeliveriesRequest,
    ListWebhooksRequest,
    RotateWebhookSecretRequest,
    SendTestWebhookRequest,
    UpdateWebhookRequest,
    WebhookDeliveryRequest,
)
from mailroom_contracts.streams import WEBHOOKS_DOMAINS, WEBHOOKS_EMAIL
from mailroom_kit import rpc
from mailroom_kit.consumer import consume, consume_batches
from mailroom_kit.logging import get_logger
from mailroom_kit.retention import Purge
from mailroom_kit.runtime import Runtime, Worker, ops_app, serve
from mailroom_kit.settings import DAY
from mailroom_kit.wake import sleep_until_stopped

from mailroom_webhooks import repository, service
from mailroom_webhooks.dispatcher import Clock, Dispatcher, system_clock
from mailroom_webhooks.handlers import EventHandlers, RpcHandlers
from mailroom_webhooks.metrics import DELIVERY_BACKLOG, OLDEST_DUE_SECONDS
from mailroom_webhooks.netpolicy import AddressPolicy
from mailroom_webhooks.settings import WebhooksSettings
from mailroom_webhooks.signing import SecretBox
from mailroom_webhooks.transport import Resolver, build_client, system_resolver

NAME = "webhooks"
log = get_logger(__name__)
SCHEMA = service.SCHEMA
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
CONSUMERS = (WEBHOOKS_EMAIL, WEBHOOKS_DOMAINS)
RPC_QUEUE = "webhooks"


def build_workers(
    settings: WebhooksSettings,
    *,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver = system_resolver,
    clock: Clock = system_clock,
) -> list[Worker]:
    """The service's background workers. `ssl_context`/`resolver`/`clock` exist for tests (a private
    CA, a fixed name→address map, a clock that jumps hours ahead); production uses the system trust
    store, resolver and clock."""
    box = SecretBox(settings.fernet_keys())
    policy = AddressPolicy(settings.allowed_networks())

    async def rpc_responders(rt: Runtime) -> None:
        handlers = RpcHandlers(rt.pool, settings, box, policy, clock=clock)
        subs = [
            await rpc.serve(
                rt.nc,
                subjects.RPC_WEBHOOKS_CREATE,
                CreateWebhookRequest,
                handlers.create_endpoint,
                queue=RPC_QUEUE,
            ),
            await rpc.serve(
                rt.nc,
                subjects.RPC_WEBHOOKS_LIST,
                ListWebhooksRequest,
                handlers.list_endpoints,
                queue=RPC_QUEUE,
            ),
            await rpc.serve(
                rt.nc, subjects.RPC_WEBHOOKS_GET, GetWebhookRequest, handlers.get_endpoint, queue=RPC_QUEUE
            ),
            await rpc.serve(
                rt.nc,
                subjects.RPC_WEBHOOKS_DELETE,
                DeleteWebhookRequest,
                handlers.delete_endpoint,
                queue=RPC_QUEUE,
            ),
            *[
                await rpc.serve(rt.nc, subject, request_type, handler, queue=RPC_QUEUE)  # type: ignore[arg-type]
                for subject, request_type, handler in (
                    (subjects.RPC_WEBHOOKS_UPDATE, UpdateWebhookRequest, handlers.update_endpoint),
                    (subjects.RPC_WEBHOOKS_ROTATE_SECRET, RotateWebhookSecretRequest, handlers.rotate_secret),
                    (subjects.RPC_WEBHOOKS_TEST, SendTestWebhookRequest, handlers.send_test),
                    (subjects.RPC_WEBHOOKS_DELIVERIES_LIST, ListWebhookDeliveriesRequest, handlers.list_deliveries),
                    (subjects.RPC_WEBHOOKS_DELIVERIES_GET, WebhookDeliveryRequest, handlers.get_delivery),
                    (subjects.RPC_WEBHOOKS_DELIVERIES_RETRY, WebhookDeliveryRequest, handlers.retry_delivery),
                )
            ],
        ]
        try:
            await rt.stop.wait()
        finally:
            for sub in subs:
                await sub.unsubscribe()

    async def email_events(rt: Runtime) -> None:
        await consume_batches(rt.js, WEBHOOKS_EMAIL, EventHandlers(rt.pool, settings).on_email_events, stop=rt.stop)

    async def domain_events(rt: Runtime) -> None:
        await consume(rt.js, WEBHOOKS_DOMAINS, EventHandlers(rt.pool, settings).on_domain_event, stop=rt.stop)

    async def dispatcher(rt: Runtime) -> None:
        async with build_client(
            policy,
            timeout=settings.timeout_seconds,
            max_connections=settings.concurrency,
            ssl_context=ssl_context,
            resolver=resolver,
        ) as client:
            await Dispatcher(rt.pool, settings, client, box, clock=clock).run(rt.stop)

    async def outbox_relay(rt: Runtime) -> None:
        await rt.relay().run(rt.stop)

    return [rpc_responders, email_events, domain_events, dispatcher, outbox_relay, backlog_gauges]


async def read_backlog(rt: Runtime) -> None:
    """The delivery backlog into /metrics (metrics.DELIVERY_BACKLOG, OLDEST_DUE_SECONDS)."""
    async with rt.pool.connection() as conn:
        counts, oldest = await repository.delivery_backlog(conn)
    for state, n in counts.items():
        DELIVERY_BACKLOG.labels(state=state).set(n)
    OLDEST_DUE_SECONDS.set(oldest)


async def backlog_gauges(rt: Runtime) -> None:
    """Every `MAILROOM_METRICS_INTERVAL_SECONDS`; a failed reading (Postgres away) keeps the last values."""
    while not rt.stop.is_set():
        try:
            await read_backlog(rt)
        except Exception as exc:
            log.warning("webhooks.backlog_gauges_failed", error=type(exc).__name__)
        if await sleep_until_stopped(rt.stop, rt.settings.metrics_interval_seconds):
            return


async def run(settings: WebhooksSettings) -> None:
    await serve(
        name=NAME,
        schema=SCHEMA,
        settings=settings,
        migrations_dir=MIGRATIONS,
        build_app=ops_app,
        workers=build_workers(settings),
        consumers=CONSUMERS,
        purges=[
            Purge("email_summaries", settings.summary_retention_days * DAY, repository.purge_email_summaries),
            Purge("deliveries", settings.delivery_retention_days * DAY, repository.purge_finished_deliveries),
        ],
    )
