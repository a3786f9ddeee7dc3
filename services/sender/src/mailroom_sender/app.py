"""Builds the sender from its settings and runs it: two durable consumers (queued emails,
SES Send events), the outbox relay, and the ops HTTP surface (health/ready/metrics)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from mailroom_contracts.streams import SENDER_PROVIDER_ACCEPTED, SENDER_QUEUED, SENDER_TENANTS
from mailroom_kit.consumer import Bulk, consume, consume_batches
from mailroom_kit.logging import get_logger
from mailroom_kit.retention import Purge
from mailroom_kit.runtime import Runtime, serve
from mailroom_kit.settings import DAY
from mailroom_kit.wake import sleep_until_stopped

from mailroom_sender import repository
from mailroom_sender.content import ContentLoader
from mailroom_sender.governor import SendGovernor
from mailroom_sender.handlers import SenderHandlers
from mailroom_sender.held import HeldQueue
from mailroom_sender.ops import build_app, queue_gauges
from mailroom_sender.providers import SesProvider, SimulatorProvider, make_ses_client
from mailroom_sender.sending import serve_sending_rpc
from mailroom_sender.service import SCHEMA, SenderService
from mailroom_sender.settings import SenderSettings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
NAME = "sender"

log = get_logger(__name__)


class Sender:
    """The sender's parts, built once from settings; its methods are the runner's workers."""

    def __init__(self, settings: SenderSettings, *, ses: SesProvider | None = None) -> None:
        self.settings = settings
        self.ses = ses or SesProvider(
            make_ses_client(
                region=settings.aws_region,
                endpoint_url=settings.ses_endpoint_url,
                max_pool_connections=settings.concurrency + 4,
                connect_timeout=settings.ses_connect_timeout_seconds,
                read_timeout=settings.effective_read_timeout,
                max_idle_seconds=settings.ses_max_idle_seconds,
            ),
            configuration_set=settings.configuration_set,
            broadcast_configuration_set=settings.broadcast_configuration_set,
            max_concurrency=settings.concurrency,
        )
        self.service = SenderService(
            ses=self.ses,
            simulator=SimulatorProvider(),
            in_doubt_seconds=settings.in_doubt_seconds,
            in_doubt_recheck_seconds=settings.in_doubt_recheck_seconds,
            in_doubt_grace_seconds=settings.in_doubt_grace_seconds,
            attempt_max_seconds=settings.attempt_max_seconds,
        )
        self._held: HeldQueue | None = None
        self._governor: SendGovernor | None = None

    async def on_start(self, rt: Runtime) -> None:
        """Make every configuration set (both streams, each tracking variant) exist and point its
        events at the SNS topic (when one is configured; otherwise they are the operator's)."""
        topic = self.settings.ses_events_topic_arn
        if not topic:
            return
        for attempt in range(1, 6):
            try:
                await self.ses.ensure_event_destination(
                    topic_arn=topic, destination_name=self.settings.ses_event_destination_name
                )
            except Exception as exc:
                if attempt == 5:
                    raise
                log.warning("ses.event_destination_failed", attempt=attempt, error=repr(exc))
                if await sleep_until_stopped(rt.stop, attempt):
                    return
            else:
                log.info(
                    "ses.event_destination_ready",
                    configuration_sets=sorted(cs.name for cs in self.ses.configuration_sets.values()),
                    topic_arn=topic,
                )
                return

    async def consume_queued(self, rt: Runtime) -> None:
        await self.settle_backlog_first(rt)
        governor = self.governor(rt)
        # The quota SES reports, before the first live send (at most 10 s; then the row's last values).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(governor.refreshed.wait(), 10)
        handlers = self.handlers(rt, fair=True)
        # issue 23 fairness: a backlog in the stream goes to the sender's queue as it is, a fetch at a
        # time (handlers.backlog / queue_backlog); a lone email takes the per-message path. A fetch is
        # half of max_ack_pending: one a replica dies holding (unacked until ack_wait, 30 s) leaves the
        # other half to the replica that takes over, which would otherwise get nothing until then.
        backlog = Bulk(handlers.queue_backlog, handlers.backlog, fetch=SENDER_QUEUED.max_ack_pending // 2)
        await consume(
            rt.js,
            SENDER_QUEUED,
            handlers.email_queued,
            stop=rt.stop,
            concurrency=self.settings.concurrency,
            bulk=backlog,
        )

    async def settle_backlog_first(self, rt: Runtime, *, within_seconds: float = 30.0) -> None:
        """After a restart, let the SES Send events that piled up while we were down settle the
        in-doubt sends before any queued email is looked at again: an in-doubt window that
        expired during the outage must not cause a resend of a message SES already has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_seconds
        while not rt.stop.is_set() and loop.time() < deadline:
            try:
                spec = SENDER_PROVIDER_ACCEPTED
                info = await rt.js.consumer_info(spec.stream, spec.durable)
            except Exception as exc:
                log.warning("sender.backlog_check_failed", error=repr(exc))
            else:
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
            if await sleep_until_stopped(rt.stop, 0.2):
                return
        if not rt.stop.is_set():
            log.warning("sender.backlog_not_drained", detail="consuming queued emails anyway", within=within_seconds)

    async def consume_provider_accepted(self, rt: Runtime) -> None:
        handlers = SenderHandlers(rt.pool, self.service)
        await consume_batches(rt.js, SENDER_PROVIDER_ACCEPTED, handlers.provider_accepted_batch, stop=rt.stop)

    def governor(self, rt: Runtime) -> SendGovernor:
        """issue 23: the send-rate governor shared by both send paths (JetStream and the held queue)."""
        if self._governor is None:
            s = self.settings
            self._governor = SendGovernor(
                rt.pool,
                self.ses,
                send_rate_share=s.send_rate_share,
                transactional_reserve=s.transactional_reserve,
                daily_hold_share=s.daily_quota_hold_share,
                refresh_seconds=s.send_quota_refresh_seconds,
            )
        return self._governor

    def handlers(
        self, rt: Runtime, *, on_resume: Callable[[], None] | None = None, fair: bool = False
    ) -> SenderHandlers:
        """`fair`: the JetStream path's handlers, which queue live mail behind the sender's
        round-robin queue instead of waiting for a token (held.py, "Fairness")."""
        admission = None
        if fair:
            s = self.settings
            admission = SendGovernor(
                rt.pool,
                None,
                send_rate_share=s.send_rate_share,
                transactional_reserve=s.transactional_reserve,
                daily_hold_share=s.daily_quota_hold_share,
                max_wait_seconds=0.0,
            )
        return SenderHandlers(
            rt.pool,
            self.service,
            ContentLoader(rt.js),
            on_resume=on_resume,
            governor=self.governor(rt),
            daily_hold_recheck_seconds=self.settings.daily_quota_recheck_seconds,
            admission=admission,
            queue_busy=self._held_queue(rt).busy if fair else None,
            wake_queue=self._wake_held if fair else None,
        )

    async def govern(self, rt: Runtime) -> None:
        """issue 23: GetAccount at start and periodically, into the shared bucket; gauges."""
        await self.governor(rt).run(rt.stop)

    def _held_queue(self, rt: Runtime) -> HeldQueue:
        """One queue per replica, shared by the tenants consumer (a resume wakes it) and its worker."""
        if self._held is None:
            handlers = self.handlers(rt, on_resume=self._wake_held)
            self._held = HeldQueue(
                rt.pool, handlers, batch=self.settings.concurrency, poll_seconds=self.settings.held_poll_seconds
            )
        return self._held

    def _wake_held(self) -> None:
        if self._held is not None:
            self._held.wake()

    async def consume_tenants(self, rt: Runtime) -> None:
        """issue 23: the tenant read model (SENDER_TENANTS)."""
        handlers = self._held_queue(rt).handlers
        await consume(rt.js, SENDER_TENANTS, handlers.tenant_updated, stop=rt.stop)

    async def send_held(self, rt: Runtime) -> None:
        """issue 23: the sender's own queue: held emails once their tenant is active again."""
        await self._held_queue(rt).run(rt.stop)

    async def relay(self, rt: Runtime) -> None:
        await rt.relay().run(rt.stop)

    def close(self) -> None:
        self.ses.close()


async def run(settings: SenderSettings) -> None:
    sender = Sender(settings)
    try:
        await serve(
            name=NAME,
            schema=SCHEMA,
            settings=settings,
            migrations_dir=MIGRATIONS,
            build_app=build_app,
            workers=[
                sender.consume_queued,
                sender.consume_provider_accepted,
                sender.consume_tenants,
                sender.send_held,
                sender.govern,
                sender.relay,
                queue_gauges,
                serve_sending_rpc,
            ],
            consumers=[SENDER_QUEUED, SENDER_PROVIDER_ACCEPTED, SENDER_TENANTS],
            on_start=sender.on_start,
            purges=[Purge("deliveries", settings.delivery_retention_days * DAY, repository.purge_settled)],
        )
    finally:
        sender.close()
