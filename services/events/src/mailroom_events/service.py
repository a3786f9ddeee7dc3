"""Turns verified SNS messages into lifecycle events: de-duplicates by SNS MessageId, parses
the SES record, maps it by the message tags set at send time, and writes the resulting
events to the outbox in the same transaction as the de-duplication row. Also confirms SNS
subscriptions (GET of the SubscribeURL, behind the same host rule as certificates)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import structlog
from mailroom_contracts import encode, subject_for
from mailroom_kit import outbox
from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger

from mailroom_events import repository
from mailroom_events.errors import EventsError, unavailable
from mailroom_events.mapping import mailroom_ref, to_lifecycle
from mailroom_events.metrics import SNS_MESSAGES
from mailroom_events.ses import SesParseError, parse_ses_message
from mailroom_events.sns import SnsMessage, SnsVerifier

log = get_logger(__name__)
SCHEMA = "events"
# SNS answers a ConfirmSubscription GET with a small XML document; never buffer more than this.
MAX_CONFIRMATION_RESPONSE = 64 * 1024


async def confirm_subscription(verifier: SnsVerifier, client: httpx.AsyncClient, msg: SnsMessage) -> None:
    """GET the SubscribeURL of a verified SubscriptionConfirmation.

    SSRF guard: the URL must pass the same scheme/host rule as certificate URLs (AWS's SNS hosts
    in production), redirects are not followed and the answer is size-capped. The URL is part of
    the signed string, so only SNS (or whoever holds a trusted certificate) can choose it.
    """
    url = msg.SubscribeURL or ""
    if not verifier.subscribe_url_allowed(url):
        SNS_MESSAGES.labels(outcome="refused").inc()
        raise EventsError(403, "forbidden", "SubscribeURL host is not trusted")
    try:
        async with client.stream("GET", url, follow_redirects=False) as resp:
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > MAX_CONFIRMATION_RESPONSE:
                    break
            status = resp.status_code
    except httpx.HTTPError as exc:
        raise unavailable(f"could not confirm the subscription: {type(exc).__name__}") from None
    if status != 200:
        raise unavailable(f"subscription confirmation answered HTTP {status}")
    SNS_MESSAGES.labels(outcome="subscription_confirmed").inc()


async def record_confirmation(conn: Conn, topic_arn: str) -> None:
    await repository.record_subscription(conn, topic_arn)


async def ingest_notification(conn: Conn, msg: SnsMessage) -> str:
    """Apply one verified Notification in ONE statement (atomic on its own: the caller runs it on an
    autocommit connection, or inside its transaction). Returns the outcome.

    The SES record is parsed and mapped first (no I/O); then one statement writes the MessageId
    row, with what SES reported, and the events to the outbox, only if the MessageId is new: a
    concurrent delivery of the same message waits on it and then sees a duplicate (its parse is
    thrown away); a failed attempt leaves nothing behind, so SNS's retry works. Outcomes: duplicate, unparseable,
    informational, mapped, ignored (ours, no lifecycle event for this SES type), not_ours (no
    Mailroom tags).
    """
    parse_error: SesParseError | None = None
    try:
        ses = parse_ses_message(msg.Message)
    except SesParseError as exc:
        ses, parse_error = None, exc
    ref = mailroom_ref(ses) if ses is not None else None
    events = (
        to_lifecycle(ses, event_id_factory=lambda: new_id("evt"), now=datetime.now(UTC), source_id=msg.MessageId)
        if ses is not None
        else []
    )
    if not await repository.record_message(
        conn,
        message_id=msg.MessageId,
        topic_arn=msg.TopicArn,
        type_=msg.Type,
        ses_event_type=ses.event_type if ses is not None else None,
        ses_message_id=ses.ses_message_id if ses is not None else None,
        email_id=ref.email_id if ref else None,
        tenant_id=ref.tenant_id if ref else None,
        events_emitted=len(events),
        outbox_rows=[(e.event_id, subject_for(e), encode(e)) for e in events],
        notify_channel=outbox.channel(SCHEMA),
    ):
        SNS_MESSAGES.labels(outcome="duplicate").inc()
        return "duplicate"
    if parse_error is not None:
        # Authentic but not an SES record we understand: keep it recorded and answer 200, so
        # SNS does not redeliver it for days; the log line is the operator's signal.
        log.error("ses.unparseable", sns_message_id=msg.MessageId, error=str(parse_error)[:300])
        SNS_MESSAGES.labels(outcome="unparseable").inc()
        return "unparseable"
    if ses is None:  # "Successfully validated SNS topic for Amazon SES event publishing."
        SNS_MESSAGES.labels(outcome="informational").inc()
        return "informational"
    outcome = "not_ours" if ref is None else "mapped" if events else "ignored"
    SNS_MESSAGES.labels(outcome=outcome).inc()
    # For the request's one summary line (the kit's `http.request`), not a line of its own.
    structlog.contextvars.bind_contextvars(
        ses_event_type=ses.event_type,
        email_id=ref.email_id if ref else None,
        tenant_id=ref.tenant_id if ref else None,
        event_ids=[e.event_id for e in events],
    )
    return outcome
