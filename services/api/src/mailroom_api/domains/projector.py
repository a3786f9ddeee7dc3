"""The domain read model projector (durable consumer `api-domains`): each domain event's snapshot
is applied in one transaction with its inbox row, so a redelivery is a no-op, and an older snapshot
never overwrites a newer one."""

from __future__ import annotations

from mailroom_contracts import events
from mailroom_contracts.streams import API_DOMAINS
from mailroom_kit.consumer import Permanent, consume, note
from mailroom_kit.inbox import claim
from mailroom_kit.runtime import Runtime
from nats.aio.msg import Msg

from mailroom_api.domains import service


async def project_domain_event(rt: Runtime, event: events.Event) -> None:
    if not isinstance(event, events.DomainEvent):
        raise Permanent(f"{type(event).__name__} is not a domain event")
    async with rt.pool.connection() as conn, conn.transaction():
        if not await claim(conn, API_DOMAINS.durable, event.event_id):
            note(result="duplicate")
            return
        written = await service.record_domain(conn, event.domain, event_at=event.occurred_at)
    note(result="written" if written else "older_snapshot", domain_id=event.domain.domain_id)


async def domains_worker(rt: Runtime) -> None:
    async def handle(event: events.Event, _msg: Msg) -> None:
        await project_domain_event(rt, event)

    await consume(rt.js, API_DOMAINS, handle, stop=rt.stop)
