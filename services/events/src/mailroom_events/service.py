"""Turns verified SNS messages into lifecycle events: de-duplicates by SNS MessageId, parses
the SES record, maps it by the message tags set at send time, and writes the resulting
events to the outbox in the same transaction as the de-duplication row. Also confirms SNS
subscriptions (GET of the SubscribeURL, behind the same host rule as certificates)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from mailroom_contracts import encode, subject_for
from mailroom_contracts.events import Event
from mailroom_kit import outbox, tracing
from mailroom_kit.db import Conn, Pool, single_statement
from mailroom_kit.group_commit import Alone, GroupWriter
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger

from mailroom_events import repository
from mailroom_events.errors import EventsError, unavailable
from mailroom_events.mapping import MailroomRef, mailroom_ref, to_lifecycle
from mailroom_events.metrics import SNS_MESSAGES
from mailroom_events.ses import SesEvent, SesParseError, parse_ses_message
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


@dataclass(frozen=True)
class Ingest:
    """What one verified Notification writes, worked out before any I/O (`prepare_notification`)."""

    msg: SnsMessage
    ses: SesEvent | None
    ref: MailroomRef | None
    events: list[Event]
    parse_error: SesParseError | None
    unmatched: repository.Unmatched | None
    trace_context: str | None

    def outbox_rows(self) -> list[tuple[str, str, bytes]]:
        return [(e.event_id, subject_for(e), encode(e)) for e in self.events]


def prepare_notification(msg: SnsMessage) -> Ingest:
    """Parse and map the SES record (no I/O)."""
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
    unmatched = _unmatched(msg.Message, ses_known=ses is not None, matched=ref is not None, error=parse_error)
    return Ingest(msg, ses, ref, events, parse_error, unmatched, tracing.context_text())


def _columns(ingest: Ingest) -> dict[str, Any]:
    """The `sns_messages` row's columns of a notification (but its type)."""
    msg, ses, ref = ingest.msg, ingest.ses, ingest.ref
    return {
        "message_id": msg.MessageId,
        "topic_arn": msg.TopicArn,
        "ses_event_type": ses.event_type if ses is not None else None,
        "ses_message_id": ses.ses_message_id if ses is not None else None,
        "email_id": ref.email_id if ref else None,
        "tenant_id": ref.tenant_id if ref else None,
        "events_emitted": len(ingest.events),
    }


async def _record(conn: Conn, ingest: Ingest) -> bool:
    return await repository.record_message(
        conn,
        type_=ingest.msg.Type,
        outbox_rows=ingest.outbox_rows(),
        notify_channel=outbox.channel(SCHEMA),
        unmatched=ingest.unmatched,
        **_columns(ingest),
    )


def _grouped_record(ingest: Ingest) -> repository.Record:
    return repository.Record(
        type=ingest.msg.Type,
        outbox=[{"event_id": i, "subject": s, "payload": p} for i, s, p in ingest.outbox_rows()],
        trace_context=ingest.trace_context,
        **_columns(ingest),
    )


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
    ingest = prepare_notification(msg)
    return _outcome(ingest, await _record(conn, ingest))


async def ingest_grouped(groups: GroupWriter[repository.Record, bool], pool: Pool, msg: SnsMessage) -> str:
    """`ingest_notification` through the group commit (issue 15, `mailroom_events.groups`): the
    Notification is written by the statement that writes the others arriving with it, with exactly
    the outcome it would have alone. An unmatched event, or a group that could not be written as
    one, is written alone."""
    ingest = prepare_notification(msg)
    if ingest.unmatched is None:
        answer = await groups.submit(_grouped_record(ingest))
        if not isinstance(answer, Alone):
            return _outcome(ingest, answer)
    async with pool.connection() as conn, single_statement(conn):
        return _outcome(ingest, await _record(conn, ingest))


def _outcome(ingest: Ingest, recorded: bool) -> str:
    msg, ses, ref, events = ingest.msg, ingest.ses, ingest.ref, ingest.events
    if not recorded:
        SNS_MESSAGES.labels(outcome="duplicate").inc()
        return "duplicate"
    if ingest.parse_error is not None:
        # Authentic but not an SES record we understand: keep it recorded and answer 200, so
        # SNS does not redeliver it for days; the log line is the operator's signal.
        log.error("ses.unparseable", sns_message_id=msg.MessageId, error=str(ingest.parse_error)[:300])
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


# --- unmatched SES events (issue 22): kept for the operator (`mailroom-events unmatched`), with a retention
_MAIL_FIELDS = ("timestamp", "messageId", "source", "sourceArn", "sendingAccountId", "destination", "tags")
MAX_DETAIL = 300


def _unmatched(
    message: str, *, ses_known: bool, matched: bool, error: SesParseError | None
) -> repository.Unmatched | None:
    """What `unmatched_events` keeps of an authentic SES event that matches no email (no Mailroom
    tags) or could not be read; None for a matched event or SES's topic validation text."""
    if error is not None:
        return repository.Unmatched(reason="unparseable", detail=str(error)[:MAX_DETAIL], record=summary(message))
    if ses_known and not matched:
        return repository.Unmatched(reason="not_ours", record=summary(message))
    return None


def summary(message: str) -> str | None:
    """The SES record's event type and the fields of `mail` that identify the mail (ids, source,
    destination, tags, time), as JSON text; never its headers or content. None when `message` is
    not a JSON object. A NUL escape becomes U+FFFD (jsonb cannot hold NUL)."""
    try:
        record = json.loads(message)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    mail = record.get("mail")
    mail = mail if isinstance(mail, dict) else {}
    kept: dict[str, Any] = {
        "eventType": record.get("eventType", record.get("notificationType")),
        "mail": {k: mail[k] for k in _MAIL_FIELDS if k in mail},
    }
    return json.dumps(kept, ensure_ascii=False).replace("\\u0000", "\\ufffd").replace("\x00", "\ufffd")


# --- end unmatched SES events
