"""Map a parsed SES event to Mailroom lifecycle contract events.

Emails are matched through the SES message tags the sender sets at send time
(`mailroom_contracts.ses`: `mailroom_email_id`, `mailroom_tenant_id`, `mailroom_mode`). An SES
event without them is not ours and maps to nothing.

| SES event | lifecycle event |
|---|---|
| send | `EmailProviderAccepted` |
| delivery | `EmailDelivered` |
| bounce | `EmailBounced` |
| complaint | `EmailComplained` |
| delivery_delay | `EmailDeliveryDelayed` |
| reject | `EmailFailed` (reason `provider_rejected`) |
| rendering_failure | `EmailFailed` (reason `rendering_failure`) |
| open | `EmailOpened` (ip, user agent; not a status) |
| click | `EmailClicked` (link, ip, user agent, link tags; not a status) |
| subscription | `EmailUnsubscribed` when it opts out (unsubscribe all, or a topic now OptOut); else nothing |
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import msgspec
from mailroom_contracts.events import (
    BouncedRecipient as ContractBouncedRecipient,
)
from mailroom_contracts.events import (
    EmailBounced,
    EmailClicked,
    EmailComplained,
    EmailDelivered,
    EmailDeliveryDelayed,
    EmailEvent,
    EmailFailed,
    EmailOpened,
    EmailProviderAccepted,
    EmailUnsubscribed,
    Event,
    Mode,
)
from mailroom_contracts.ses import TAG_EMAIL_ID, TAG_MODE, TAG_TENANT_ID

from mailroom_events.ses import (
    BounceDetail,
    ClickDetail,
    ComplaintDetail,
    DeliveryDelayDetail,
    DeliveryDetail,
    OpenDetail,
    RejectDetail,
    RenderingFailureDetail,
    SendDetail,
    SesDetail,
    SesEvent,
    SubscriptionDetail,
)

__all__ = [
    "MailroomRef",
    "deterministic_event_id",
    "mailroom_ref",
    "to_lifecycle",
]

_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, as mailroom_kit.ids


class MailroomRef(msgspec.Struct, frozen=True, kw_only=True):
    """Which Mailroom email an SES event is about, read from its message tags."""

    email_id: str
    tenant_id: str
    mode: Mode = "live"


def _first(tags: dict[str, list[str]], key: str) -> str | None:
    values = tags.get(key)
    if not values or not values[0]:
        return None
    return values[0]


def mailroom_ref(ses: SesEvent) -> MailroomRef | None:
    """The Mailroom email this event is about, or None when it is not one of ours.

    Email id and tenant id tags are required; a missing mode tag means "live"; an unknown mode
    value means the tags were not set by Mailroom (None).
    """
    email_id = _first(ses.tags, TAG_EMAIL_ID)
    tenant_id = _first(ses.tags, TAG_TENANT_ID)
    if email_id is None or tenant_id is None:
        return None
    mode = _first(ses.tags, TAG_MODE) or "live"
    if mode == "test":
        return MailroomRef(email_id=email_id, tenant_id=tenant_id, mode="test")
    if mode == "live":
        return MailroomRef(email_id=email_id, tenant_id=tenant_id, mode="live")
    return None


def deterministic_event_id(source_id: str, index: int, occurred_at: datetime) -> str:
    """A stable `evt_` id for the `index`-th event derived from one source message.

    Same shape as `mailroom_kit.ids.new_id("evt")` (26 Crockford base32 chars: 48-bit millisecond
    time + 80 bits), with the time taken from `occurred_at` and the 80 bits from a SHA-256 of
    `(source_id, index)`, so the same input always gives the same id and ids still sort by time.
    """
    millis = max(0, int(occurred_at.timestamp() * 1000)) & ((1 << 48) - 1)
    digest = hashlib.sha256(f"{source_id}\x00{index}".encode()).digest()
    value = (millis << 80) | int.from_bytes(digest[:10], "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def _first_diagnostic_code(detail: BounceDetail) -> str | None:
    for recipient in detail.recipients:
        if recipient.diagnostic_code:
            return recipient.diagnostic_code
    return None


def _rendering_failure_message(detail: RenderingFailureDetail) -> str:
    if detail.template_name:
        return f"template {detail.template_name}: {detail.error_message}"
    return detail.error_message


def _opted_out_topics(detail: SubscriptionDetail) -> list[str]:
    prefs = detail.new_topic_preferences
    if prefs is None:
        return []
    return [t.topic_name for t in prefs.topic_subscription_status if t.subscription_status == "OptOut"]


def _opted_out(detail: SubscriptionDetail) -> bool:
    prefs = detail.new_topic_preferences
    return prefs is not None and (prefs.unsubscribe_all or bool(_opted_out_topics(detail)))


def to_lifecycle(
    ses: SesEvent,
    *,
    event_id_factory: Callable[[], str],
    now: datetime,
    source_id: str | None = None,
) -> list[Event]:
    """Lifecycle events for one SES event ([] when it is not a Mailroom email or has no equivalent).

    `occurred_at` is the SES event's own timestamp (delivery/bounce/complaint/delay), else the
    mail's timestamp (send, reject, rendering failure), but never later than `now` (clock skew).
    Event ids come from `event_id_factory()` unless `source_id` (the SNS MessageId, or another id
    that is the same on every redelivery) is given; then they are `deterministic_event_id(...)`,
    so a redelivered message yields the same ids and JetStream de-duplicates it.
    """
    ref = mailroom_ref(ses)
    detail = ses.detail
    if ref is None or (isinstance(detail, SubscriptionDetail) and not _opted_out(detail)):
        # a subscription change that opts nobody out (e.g. a re-subscribe) changes nothing.
        return []

    ses_time = ses.timestamp
    occurred_at = now if ses_time > now else ses_time
    event_id = event_id_factory() if source_id is None else deterministic_event_id(source_id, 0, ses_time)
    common = _Common(event_id=event_id, occurred_at=occurred_at, ref=ref)
    return [_build(ses, detail, common)]


class _Common(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    occurred_at: datetime
    ref: MailroomRef


def _build(ses: SesEvent, detail: SesDetail, c: _Common) -> EmailEvent:
    ref = c.ref
    common: dict[str, Any] = {
        "event_id": c.event_id,
        "occurred_at": c.occurred_at,
        "tenant_id": ref.tenant_id,
        "email_id": ref.email_id,
        "mode": ref.mode,
    }
    if isinstance(detail, SendDetail):
        return EmailProviderAccepted(
            **common,
            provider_message_id=ses.ses_message_id,
        )
    if isinstance(detail, DeliveryDetail):
        return EmailDelivered(
            **common,
            recipients=list(detail.recipients),
            provider_message_id=ses.ses_message_id,
            smtp_response=detail.smtp_response,
        )
    if isinstance(detail, BounceDetail):
        return EmailBounced(
            **common,
            recipients=[r.email for r in detail.recipients],
            bounce_type=detail.bounce_type,
            bounce_subtype=detail.bounce_subtype,
            diagnostic_code=_first_diagnostic_code(detail),
            provider_message_id=ses.ses_message_id,
            bounced_recipients=[
                ContractBouncedRecipient(
                    email=r.email, action=r.action, status=r.status, diagnostic_code=r.diagnostic_code
                )
                for r in detail.recipients
            ],
        )
    if isinstance(detail, ComplaintDetail):
        return EmailComplained(
            **common,
            recipients=list(detail.recipients),
            feedback_type=detail.feedback_type,
            provider_message_id=ses.ses_message_id,
        )
    if isinstance(detail, DeliveryDelayDetail):
        return EmailDeliveryDelayed(
            **common,
            recipients=[r.email for r in detail.recipients],
            delay_type=detail.delay_type,
            provider_message_id=ses.ses_message_id,
        )
    if isinstance(detail, OpenDetail):
        return EmailOpened(
            **common,
            ip=detail.ip_address,
            user_agent=detail.user_agent,
            provider_message_id=ses.ses_message_id,
        )
    if isinstance(detail, ClickDetail):
        return EmailClicked(
            **common,
            link=detail.link,
            ip=detail.ip_address,
            user_agent=detail.user_agent,
            link_tags={k: list(v) for k, v in detail.link_tags.items()},
            provider_message_id=ses.ses_message_id,
        )
    if isinstance(detail, SubscriptionDetail):
        prefs = detail.new_topic_preferences
        return EmailUnsubscribed(
            **common,
            recipients=list(ses.destination),
            source=detail.source,
            contact_list=detail.contact_list,
            unsubscribe_all=prefs is not None and prefs.unsubscribe_all,
            topics=_opted_out_topics(detail),
            provider_message_id=ses.ses_message_id,
        )
    if isinstance(detail, RejectDetail):
        return EmailFailed(
            **common,
            reason="provider_rejected",
            message=detail.reason,
        )
    if isinstance(detail, RenderingFailureDetail):
        return EmailFailed(
            **common,
            reason="rendering_failure",
            message=_rendering_failure_message(detail),
        )
    raise TypeError(f"no lifecycle mapping for {type(detail).__name__}")
