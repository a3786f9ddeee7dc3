"""Message edges: the email log projector (durable consumer API_EMAIL_LOG) and the domain read
model projector (API_DOMAINS). Each event is applied in one transaction together with its
inbox row, so a redelivery is a no-op."""

from __future__ import annotations

from mailroom_contracts import events
from mailroom_contracts.streams import API_DOMAINS, API_EMAIL_LOG
from mailroom_kit.consumer import Retry, consume
from mailroom_kit.logging import get_logger
from mailroom_kit.runtime import Runtime
from nats.aio.msg import Msg

from mailroom_api import repository as repo
from mailroom_api import service

log = get_logger(__name__)


async def project_email_event(rt: Runtime, event: events.Event) -> None:
    if not isinstance(event, events.EmailEvent):
        return
    try:
        async with rt.pool.connection() as conn, conn.transaction():
            if not await repo.claim_event(conn, API_EMAIL_LOG.durable, event.event_id):
                return
            applied = await service.apply_email_event(conn, event)
    except service.EmailNotYetKnown:
        # The EmailQueued transaction is committed before its event is published, so this is a
        # lagging read or an email of another installation: try again later, never drop it.
        raise Retry("email not in the log yet", delay=2.0) from None
    log.info("email event projected", type=type(event).__name__, applied=applied)


async def project_domain_event(rt: Runtime, event: events.Event) -> None:
    if not isinstance(event, events.DomainEvent):
        return
    async with rt.pool.connection() as conn, conn.transaction():
        if not await repo.claim_event(conn, API_DOMAINS.durable, event.event_id):
            return
        written = await service.record_domain(conn, event.domain, event_at=event.occurred_at)
    log.info("domain event projected", type=type(event).__name__, domain_id=event.domain.domain_id, written=written)


async def email_log_worker(rt: Runtime) -> None:
    async def handle(event: events.Event, _msg: Msg) -> None:
        await project_email_event(rt, event)

    await consume(rt.js, API_EMAIL_LOG, handle, stop=rt.stop)


async def domains_worker(rt: Runtime) -> None:
    async def handle(event: events.Event, _msg: Msg) -> None:
        await project_domain_event(rt, event)

    await consume(rt.js, API_DOMAINS, handle, stop=rt.stop)


async def relay_worker(rt: Runtime) -> None:
    await rt.relay().run(rt.stop)
