"""The email log projector (durable consumer `api-email-log`): each lifecycle event is applied in
one transaction with its inbox row, so a redelivery is a no-op; status moves only forward, per
recipient and per email (see `status`)."""

from __future__ import annotations

from typing import Any

import msgspec
from mailroom_contracts import events
from mailroom_contracts.streams import API_EMAIL_LOG
from mailroom_kit.consumer import Permanent, Retry, backoff, consume, note
from mailroom_kit.db import Conn
from mailroom_kit.inbox import claim
from mailroom_kit.runtime import Runtime
from nats.aio.msg import Msg

from mailroom_api.emails import repository as repo
from mailroom_api.emails.status import EVENT_STATUS, advance

_COMMON_FIELDS = ("type", "event_id", "occurred_at", "tenant_id", "email_id", "mode")


class EmailNotYetKnown(Exception):
    """A lifecycle event arrived before the email it is about is visible (retry later)."""


def _timeline_data(event: events.EmailEvent) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(event)
    for common in _COMMON_FIELDS:
        data.pop(common, None)
    return data


async def apply_email_event(conn: Conn, event: events.EmailEvent) -> bool:
    """Project one lifecycle event into the email log. Returns False for a duplicate."""
    new_status = EVENT_STATUS.get(type(event))
    if new_status is None:
        return False
    email = await repo.lock_email(conn, event.email_id)
    if email is None:
        raise EmailNotYetKnown(event.email_id)
    if not await repo.insert_timeline_event(
        conn,
        event_id=event.event_id,
        email_id=event.email_id,
        type_=new_status,
        occurred_at=event.occurred_at,
        data=_timeline_data(event),
    ):
        return False
    targets = {r.lower() for r in getattr(event, "recipients", [])}
    for recipient in await repo.get_recipients(conn, event.email_id):
        if targets and recipient.address.lower() not in targets:
            continue
        status = advance(recipient.status, new_status)
        if status != recipient.status:
            await repo.update_recipient_status(conn, event.email_id, recipient.position, status)
    await repo.update_email_status(conn, event.email_id, advance(email.status, new_status), event.occurred_at)
    return True


async def project_email_event(rt: Runtime, event: events.Event, *, delivery: int = 1) -> None:
    if not isinstance(event, events.EmailEvent):
        # The consumer follows lifecycle subjects only; anything else there is a bug upstream.
        raise Permanent(f"{type(event).__name__} is not an email lifecycle event")
    try:
        async with rt.pool.connection() as conn, conn.transaction():
            if not await claim(conn, API_EMAIL_LOG.durable, event.event_id):
                note(result="duplicate")
                return
            applied = await apply_email_event(conn, event)
    except EmailNotYetKnown:
        # The EmailQueued transaction is committed before its event is published, so this is a
        # lagging read or an email of another installation: try again soon, then less and less
        # often; after the consumer's max_deliveries (about an hour) it is a dead letter.
        raise Retry("email not in the log yet", delay=max(2.0, backoff(delivery))) from None
    note(result="applied" if applied else "unchanged")


async def email_log_worker(rt: Runtime) -> None:
    async def handle(event: events.Event, msg: Msg) -> None:
        await project_email_event(rt, event, delivery=msg.metadata.num_delivered or 1)

    await consume(rt.js, API_EMAIL_LOG, handle, stop=rt.stop)
