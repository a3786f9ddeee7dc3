"""Webhook payloads: `{"id", "type", "created_at", "data"}` built from contract events (SPEC §2 Webhooks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from mailroom_contracts import events as ev
from mailroom_contracts.rpc import WEBHOOK_EVENT_TYPES

_encoder = msgspec.json.Encoder()

# Contract event class → webhook event type (domain status changes are decided per event).
EMAIL_WEBHOOK_TYPES: dict[type[ev.EmailEvent], str] = {
    ev.EmailQueued: "email.queued",
    ev.EmailSent: "email.sent",
    ev.EmailDelivered: "email.delivered",
    ev.EmailBounced: "email.bounced",
    ev.EmailComplained: "email.complained",
    ev.EmailDeliveryDelayed: "email.delivery_delayed",
    ev.EmailFailed: "email.failed",
    ev.EmailScheduled: "email.scheduled",
    ev.EmailCanceled: "email.canceled",
    ev.EmailOpened: "email.opened",
    ev.EmailClicked: "email.clicked",
    ev.EmailSuppressed: "email.suppressed",
    ev.EmailUnsubscribed: "email.unsubscribed",
}
# Contract email events tenants are not told about by webhook: the consumer records nothing for
# them and acks them. `provider_accepted` is the sender's internal settling of in-doubt sends.
NOT_WEBHOOKS: tuple[type[ev.EmailEvent], ...] = (ev.EmailProviderAccepted,)
# The events that carry the email's summary (its EmailScheduled comes first for a scheduled email).
SUMMARY_EVENTS = (ev.EmailQueued, ev.EmailScheduled)

# Every type a tenant may subscribe to (SPEC §2), some produced by later features.
KNOWN_EVENT_TYPES: frozenset[str] = WEBHOOK_EVENT_TYPES


class EmailSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a payload needs about the email, recorded from EmailQueued (or EmailScheduled)."""

    email_id: str
    tenant_id: str
    mode: str
    from_address: str | None
    to_addresses: list[str]
    recipients: list[str]
    subject: str | None
    tags: dict[str, str]
    metadata: dict[str, Any] | None


def format_address(address: ev.Address) -> str:
    return f"{address.name} <{address.email}>" if address.name else address.email


def summary_from_queued(event: ev.EmailQueued | ev.EmailScheduled) -> EmailSummary:
    return EmailSummary(
        email_id=event.email_id,
        tenant_id=event.tenant_id,
        mode=event.mode,
        from_address=format_address(event.from_),
        to_addresses=[format_address(a) for a in event.to],
        recipients=[a.email for a in (*event.to, *event.cc, *event.bcc)],
        subject=event.subject,
        tags=dict(event.tags),
        metadata=event.metadata,
    )


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _envelope(event: ev.Event, webhook_type: str, data: dict[str, Any]) -> bytes:
    return _encoder.encode(
        {"id": event.event_id, "type": webhook_type, "created_at": rfc3339(event.occurred_at), "data": data}
    )


def unknown_summary(event: ev.EmailEvent) -> EmailSummary:
    """Stand-in when the EmailQueued never arrived: the payload still goes out, with what we know."""
    return EmailSummary(
        email_id=event.email_id,
        tenant_id=event.tenant_id,
        mode=event.mode,
        from_address=None,
        to_addresses=[],
        recipients=[],
        subject=None,
        tags={},
        metadata=None,
    )


def email_payload(event: ev.EmailEvent, summary: EmailSummary) -> bytes:
    webhook_type = EMAIL_WEBHOOK_TYPES[type(event)]
    event_recipients: list[str]
    if isinstance(event, ev.EmailSuppressed):
        # SuppressedRecipient{email, reason}, not addresses: the addresses go in `recipients`.
        event_recipients = [r.email for r in event.recipients]
    else:
        event_recipients = list(getattr(event, "recipients", None) or [])
    recipients = event_recipients or list(summary.recipients)
    data: dict[str, Any] = {
        "email_id": event.email_id,
        "from": summary.from_address,
        "to": summary.to_addresses,
        "subject": summary.subject,
        "recipient": recipients[0] if recipients else None,
        "recipients": recipients,
        "tags": summary.tags,
        "metadata": summary.metadata,
        "mode": summary.mode,
    }
    provider_message_id = getattr(event, "provider_message_id", None)
    if provider_message_id:
        data["provider_message_id"] = provider_message_id
    if isinstance(event, ev.EmailBounced):
        data["bounce"] = {
            "type": event.bounce_type,
            "subtype": event.bounce_subtype,
            "diagnostic_code": event.diagnostic_code,
        }
    elif isinstance(event, ev.EmailComplained):
        data["complaint"] = {"feedback_type": event.feedback_type}
    elif isinstance(event, ev.EmailFailed):
        data["failed"] = {"reason": event.reason, "message": event.message}
    elif isinstance(event, ev.EmailDeliveryDelayed):
        data["delay"] = {"type": event.delay_type}
    elif isinstance(event, ev.EmailDelivered) and event.smtp_response:
        data["smtp_response"] = event.smtp_response
    elif isinstance(event, ev.EmailOpened):
        data["open"] = {"ip": event.ip, "user_agent": event.user_agent}
    elif isinstance(event, ev.EmailClicked):
        data["click"] = {"link": event.link, "ip": event.ip, "user_agent": event.user_agent}
    elif isinstance(event, ev.EmailSuppressed):
        data["suppressed"] = [{"email": r.email, "reason": r.reason} for r in event.recipients]
    elif isinstance(event, ev.EmailUnsubscribed):
        # `recipients` are the addresses that unsubscribed (each is now suppressed, reason
        # `unsubscribe`); how: SES's source (e.g. "UnsubscribeHeader"), or a contact list's topics.
        data["unsubscribe"] = {
            "source": event.source,
            "contact_list": event.contact_list,
            "unsubscribe_all": event.unsubscribe_all,
            "topics": list(event.topics),
        }
    elif isinstance(event, ev.EmailScheduled | ev.EmailCanceled) and event.scheduled_at is not None:
        data["scheduled_at"] = rfc3339(event.scheduled_at)
    return _envelope(event, webhook_type, data)


def domain_webhook_type(event: ev.DomainEvent) -> str | None:
    """The webhook type a domain event maps to, or None when tenants are not told about it."""
    if isinstance(event, ev.DomainVerified):
        return "domain.verified"
    if isinstance(event, ev.DomainFailed):
        return "domain.failed"
    if (
        isinstance(event, ev.DomainStatusChanged)
        and event.domain.status == "temporary_failure"
        and event.previous_status != "temporary_failure"
    ):  # record-only changes tell nobody
        return "domain.temporary_failure"
    return None


def domain_payload(event: ev.DomainEvent, webhook_type: str) -> bytes:
    domain = event.domain
    data: dict[str, Any] = {
        "domain_id": domain.domain_id,
        "name": domain.name,
        "status": domain.status,
        "region": domain.region,
        "records": msgspec.to_builtins(domain.records),
        "created_at": rfc3339(domain.created_at),
        "last_checked_at": rfc3339(domain.last_checked_at) if domain.last_checked_at else None,
    }
    if isinstance(event, ev.DomainStatusChanged):
        data["previous_status"] = event.previous_status
    if isinstance(event, ev.DomainFailed):
        data["reason"] = event.reason
    return _envelope(event, webhook_type, data)


def test_payload(event_id: str, endpoint_id: str, created_at: datetime) -> bytes:
    """`webhook.test` (POST /v1/webhooks/{id}/test): signed and delivered like any other event."""
    return _encoder.encode(
        {
            "id": event_id,
            "type": "webhook.test",
            "created_at": rfc3339(created_at),
            "data": {"webhook_id": endpoint_id, "message": "This is a test event from Mailroom."},
        }
    )
