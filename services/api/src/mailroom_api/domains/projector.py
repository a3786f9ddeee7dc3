"""The domain read model projector (durable consumer `api-domains`): the domain events of one fetch
are applied in one transaction with their inbox rows (the kit's batch mode), so a redelivery is a
no-op, and an older snapshot never overwrites a newer one (the upsert compares them, so the order
in which a batch applies them does not matter; it goes by domain id so two batches that share
domains take their row locks in the same order)."""

from __future__ import annotations

from mailroom_contracts import events
from mailroom_contracts.streams import API_DOMAINS
from mailroom_kit.consumer import BatchItem, consume_batches
from mailroom_kit.inbox import claim_many
from mailroom_kit.runtime import Runtime

from mailroom_api.domains import service


async def project_domain_events(rt: Runtime, items: list[BatchItem]) -> None:
    mine: list[tuple[BatchItem, events.DomainEvent]] = []
    for item in items:
        if isinstance(item.event, events.DomainEvent):
            mine.append((item, item.event))
        else:
            item.permanent(f"{type(item.event).__name__} is not a domain event")
    if not mine:
        return
    async with rt.pool.connection() as conn, conn.transaction():
        claimed = await claim_many(conn, API_DOMAINS.durable, [event.event_id for _, event in mine])
        for item, event in sorted(mine, key=lambda pair: pair[1].domain.domain_id):
            if event.event_id not in claimed:
                item.note(result="duplicate")
                continue
            claimed.discard(event.event_id)  # the same id again later in the batch is a duplicate
            if isinstance(event, events.DomainDeleted):
                await service.forget_domain(conn, event.domain)
                item.note(result="deleted", domain_id=event.domain.domain_id)
                continue
            written = await service.record_domain(conn, event.domain, event_at=event.occurred_at)
            item.note(result="written" if written else "older_snapshot", domain_id=event.domain.domain_id)


async def domains_worker(rt: Runtime) -> None:
    async def handle(items: list[BatchItem]) -> None:
        await project_domain_events(rt, items)

    await consume_batches(rt.js, API_DOMAINS, handle, stop=rt.stop)
