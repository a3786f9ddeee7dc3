"""Parse the `Message` of an SES → SNS delivery into one normalised `SesEvent`.

Both SES formats are handled:

- event publishing (configuration-set event destination): top-level `eventType` — Send, Delivery,
  Bounce, Complaint, Reject, DeliveryDelay, Open, Click, Rendering Failure, Subscription;
- identity feedback notifications: top-level `notificationType` — Bounce, Complaint, Delivery.

When an SNS event destination is created, SES publishes the plain text
"Successfully validated SNS topic for Amazon SES event publishing."; that parses to
`None` (not an error, nothing to do). Anything else that is not a well-formed SES
event raises `SesParseError`.

A `\\u0000` escape in the record (a receiving MTA's SMTP answer can carry one into a bounce's
diagnostic code) is decoded as U+FFFD: Postgres text cannot hold NUL, and the event must not be
lost over one character.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "TOPIC_VALIDATION_TEXT",
    "BounceDetail",
    "BouncedRecipient",
    "ClickDetail",
    "ComplaintDetail",
    "DelayedRecipient",
    "DeliveryDelayDetail",
    "DeliveryDetail",
    "OpenDetail",
    "RejectDetail",
    "RenderingFailureDetail",
    "SendDetail",
    "SesDetail",
    "SesEvent",
    "SesEventType",
    "SesParseError",
    "SubscriptionDetail",
    "TopicPreferences",
    "TopicSubscriptionStatus",
    "parse_ses_message",
]

TOPIC_VALIDATION_TEXT: Final = "Successfully validated SNS topic for Amazon SES event publishing."
# An escaped backslash pair or a NUL escape; scanning left to right pairs backslashes first, so
# `\\u0000` (a literal backslash, then "u0000") is left alone. Linear: no backtracking.
_NUL_ESCAPE = re.compile(r"\\\\|\\u0000")

SesEventType = Literal[
    "send",
    "delivery",
    "bounce",
    "complaint",
    "reject",
    "delivery_delay",
    "open",
    "click",
    "rendering_failure",
    "subscription",
]


class SesParseError(ValueError):
    """The SNS Message is not an SES event this parser understands."""


# --------------------------------------------------------------------------- normalised details


class _Detail(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    pass


class SendDetail(_Detail, frozen=True, kw_only=True, tag="send"):
    pass


class DeliveryDetail(_Detail, frozen=True, kw_only=True, tag="delivery"):
    timestamp: datetime
    recipients: list[str]
    processing_time_millis: int | None = None
    smtp_response: str | None = None
    reporting_mta: str | None = None
    remote_mta_ip: str | None = None


class BouncedRecipient(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    action: str | None = None
    status: str | None = None
    diagnostic_code: str | None = None


class BounceDetail(_Detail, frozen=True, kw_only=True, tag="bounce"):
    bounce_type: Literal["Permanent", "Transient", "Undetermined"]
    bounce_subtype: str
    recipients: list[BouncedRecipient]
    timestamp: datetime
    feedback_id: str | None = None
    reporting_mta: str | None = None
    remote_mta_ip: str | None = None


class ComplaintDetail(_Detail, frozen=True, kw_only=True, tag="complaint"):
    recipients: list[str]
    timestamp: datetime
    feedback_type: str | None = None
    complaint_subtype: str | None = None
    feedback_id: str | None = None
    user_agent: str | None = None
    arrival_date: str | None = None


class RejectDetail(_Detail, frozen=True, kw_only=True, tag="reject"):
    reason: str


class DelayedRecipient(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    status: str | None = None
    diagnostic_code: str | None = None


class DeliveryDelayDetail(_Detail, frozen=True, kw_only=True, tag="delivery_delay"):
    timestamp: datetime
    delay_type: str
    recipients: list[DelayedRecipient]
    expiration_time: datetime | None = None
    reporting_mta: str | None = None


class OpenDetail(_Detail, frozen=True, kw_only=True, tag="open"):
    timestamp: datetime
    ip_address: str | None = None
    user_agent: str | None = None


class ClickDetail(_Detail, frozen=True, kw_only=True, tag="click"):
    timestamp: datetime
    link: str
    ip_address: str | None = None
    user_agent: str | None = None
    link_tags: dict[str, list[str]] = {}


class RenderingFailureDetail(_Detail, frozen=True, kw_only=True, tag="rendering_failure"):
    template_name: str | None = None
    error_message: str


class TopicSubscriptionStatus(msgspec.Struct, frozen=True, kw_only=True):
    topic_name: str
    subscription_status: str


class TopicPreferences(msgspec.Struct, frozen=True, kw_only=True):
    unsubscribe_all: bool = False
    topic_subscription_status: list[TopicSubscriptionStatus] = []
    topic_default_subscription_status: list[TopicSubscriptionStatus] = []


class SubscriptionDetail(_Detail, frozen=True, kw_only=True, tag="subscription"):
    timestamp: datetime
    contact_list: str | None = None
    source: str | None = None
    new_topic_preferences: TopicPreferences | None = None
    old_topic_preferences: TopicPreferences | None = None


SesDetail = (
    SendDetail
    | DeliveryDetail
    | BounceDetail
    | ComplaintDetail
    | RejectDetail
    | DeliveryDelayDetail
    | OpenDetail
    | ClickDetail
    | RenderingFailureDetail
    | SubscriptionDetail
)


class SesEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One SES event, either format. `detail` is the typed object for `event_type`."""

    event_type: SesEventType
    format: Literal["event_publishing", "notification"]
    ses_message_id: str
    mail_timestamp: datetime
    source: str
    destination: list[str]
    tags: dict[str, list[str]] = {}
    subject: str | None = None
    source_arn: str | None = None
    sending_account_id: str | None = None
    detail: SesDetail

    @property
    def timestamp(self) -> datetime:
        """When this event happened: the detail's own timestamp, else the mail's (Send, Reject, ...)."""
        own: datetime | None = getattr(self.detail, "timestamp", None)
        return own if own is not None else self.mail_timestamp


# --------------------------------------------------------------------------- wire shapes (SES JSON)

_Time = Annotated[datetime, msgspec.Meta(tz=True)]  # SES timestamps are UTC with "Z"


class _CommonHeaders(msgspec.Struct, frozen=True, rename="camel"):
    subject: str | None = None


class _Mail(msgspec.Struct, frozen=True, rename="camel"):
    timestamp: _Time
    message_id: str
    source: str
    destination: list[str]
    source_arn: str | None = None
    sending_account_id: str | None = None
    tags: dict[str, list[str]] = {}
    common_headers: _CommonHeaders | None = None


class _Delivery(msgspec.Struct, frozen=True, rename="camel"):
    timestamp: _Time
    recipients: list[str]
    processing_time_millis: int | None = None
    smtp_response: str | None = None
    reporting_mta: str | None = msgspec.field(default=None, name="reportingMTA")
    remote_mta_ip: str | None = None


class _BouncedRecipient(msgspec.Struct, frozen=True, rename="camel"):
    email_address: str
    action: str | None = None
    status: str | None = None
    diagnostic_code: str | None = None


class _Bounce(msgspec.Struct, frozen=True, rename="camel"):
    bounce_type: Literal["Permanent", "Transient", "Undetermined"]
    bounce_sub_type: str
    bounced_recipients: list[_BouncedRecipient]
    timestamp: _Time
    feedback_id: str | None = None
    reporting_mta: str | None = msgspec.field(default=None, name="reportingMTA")
    remote_mta_ip: str | None = None


class _Address(msgspec.Struct, frozen=True, rename="camel"):
    email_address: str


class _Complaint(msgspec.Struct, frozen=True, rename="camel"):
    complained_recipients: list[_Address]
    timestamp: _Time
    complaint_feedback_type: str | None = None
    complaint_sub_type: str | None = None
    feedback_id: str | None = None
    user_agent: str | None = None
    arrival_date: str | None = None


class _Reject(msgspec.Struct, frozen=True, rename="camel"):
    reason: str


class _DelayedRecipient(msgspec.Struct, frozen=True, rename="camel"):
    email_address: str
    status: str | None = None
    diagnostic_code: str | None = None


class _DeliveryDelay(msgspec.Struct, frozen=True, rename="camel"):
    timestamp: _Time
    delay_type: str
    delayed_recipients: list[_DelayedRecipient]
    expiration_time: _Time | None = None
    reporting_mta: str | None = msgspec.field(default=None, name="reportingMTA")


class _Open(msgspec.Struct, frozen=True, rename="camel"):
    timestamp: _Time
    ip_address: str | None = None
    user_agent: str | None = None


class _Click(msgspec.Struct, frozen=True, rename="camel"):
    timestamp: _Time
    link: str
    ip_address: str | None = None
    user_agent: str | None = None
    link_tags: dict[str, list[str]] | None = None


class _Failure(msgspec.Struct, frozen=True, rename="camel"):
    error_message: str
    template_name: str | None = None


class _TopicStatus(msgspec.Struct, frozen=True, rename="camel"):
    topic_name: str
    subscription_status: str


class _TopicPreferences(msgspec.Struct, frozen=True, rename="camel"):
    unsubscribe_all: bool = False
    topic_subscription_status: list[_TopicStatus] = []
    topic_default_subscription_status: list[_TopicStatus] = []


class _Subscription(msgspec.Struct, frozen=True, rename="camel"):
    timestamp: _Time
    contact_list: str | None = None
    source: str | None = None
    new_topic_preferences: _TopicPreferences | None = None
    old_topic_preferences: _TopicPreferences | None = None


class _Record(msgspec.Struct, frozen=True, rename="camel"):
    mail: _Mail
    event_type: str | None = None
    notification_type: str | None = None
    send: dict[str, object] | None = None
    delivery: _Delivery | None = None
    bounce: _Bounce | None = None
    complaint: _Complaint | None = None
    reject: _Reject | None = None
    delivery_delay: _DeliveryDelay | None = None
    open: _Open | None = None
    click: _Click | None = None
    failure: _Failure | None = None
    subscription: _Subscription | None = None


_EVENT_TYPES: Final[dict[str, SesEventType]] = {
    "Send": "send",
    "Delivery": "delivery",
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Reject": "reject",
    "DeliveryDelay": "delivery_delay",
    "Open": "open",
    "Click": "click",
    "Rendering Failure": "rendering_failure",
    "RenderingFailure": "rendering_failure",
    "Subscription": "subscription",
}
_NOTIFICATION_TYPES: Final[dict[str, SesEventType]] = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
}
_DECODER: Final = msgspec.json.Decoder(_Record)


def _preferences(value: _TopicPreferences | None) -> TopicPreferences | None:
    if value is None:
        return None
    return TopicPreferences(
        unsubscribe_all=value.unsubscribe_all,
        topic_subscription_status=[
            TopicSubscriptionStatus(topic_name=s.topic_name, subscription_status=s.subscription_status)
            for s in value.topic_subscription_status
        ],
        topic_default_subscription_status=[
            TopicSubscriptionStatus(topic_name=s.topic_name, subscription_status=s.subscription_status)
            for s in value.topic_default_subscription_status
        ],
    )


def _missing(event_type: str, key: str) -> SesParseError:
    return SesParseError(f"{event_type} event without its {key!r} object")


def _detail(event_type: SesEventType, record: _Record) -> SesDetail:
    if event_type == "send":
        return SendDetail()
    if event_type == "delivery":
        if (d := record.delivery) is None:
            raise _missing(event_type, "delivery")
        return DeliveryDetail(
            timestamp=d.timestamp,
            recipients=list(d.recipients),
            processing_time_millis=d.processing_time_millis,
            smtp_response=d.smtp_response,
            reporting_mta=d.reporting_mta,
            remote_mta_ip=d.remote_mta_ip,
        )
    if event_type == "bounce":
        if (b := record.bounce) is None:
            raise _missing(event_type, "bounce")
        return BounceDetail(
            bounce_type=b.bounce_type,
            bounce_subtype=b.bounce_sub_type,
            recipients=[
                BouncedRecipient(
                    email=r.email_address, action=r.action, status=r.status, diagnostic_code=r.diagnostic_code
                )
                for r in b.bounced_recipients
            ],
            timestamp=b.timestamp,
            feedback_id=b.feedback_id,
            reporting_mta=b.reporting_mta,
            remote_mta_ip=b.remote_mta_ip,
        )
    if event_type == "complaint":
        if (c := record.complaint) is None:
            raise _missing(event_type, "complaint")
        return ComplaintDetail(
            recipients=[r.email_address for r in c.complained_recipients],
            timestamp=c.timestamp,
            feedback_type=c.complaint_feedback_type,
            complaint_subtype=c.complaint_sub_type,
            feedback_id=c.feedback_id,
            user_agent=c.user_agent,
            arrival_date=c.arrival_date,
        )
    if event_type == "reject":
        if (rj := record.reject) is None:
            raise _missing(event_type, "reject")
        return RejectDetail(reason=rj.reason)
    if event_type == "delivery_delay":
        if (dd := record.delivery_delay) is None:
            raise _missing(event_type, "deliveryDelay")
        return DeliveryDelayDetail(
            timestamp=dd.timestamp,
            delay_type=dd.delay_type,
            recipients=[
                DelayedRecipient(email=r.email_address, status=r.status, diagnostic_code=r.diagnostic_code)
                for r in dd.delayed_recipients
            ],
            expiration_time=dd.expiration_time,
            reporting_mta=dd.reporting_mta,
        )
    if event_type == "open":
        if (o := record.open) is None:
            raise _missing(event_type, "open")
        return OpenDetail(timestamp=o.timestamp, ip_address=o.ip_address, user_agent=o.user_agent)
    if event_type == "click":
        if (k := record.click) is None:
            raise _missing(event_type, "click")
        return ClickDetail(
            timestamp=k.timestamp,
            link=k.link,
            ip_address=k.ip_address,
            user_agent=k.user_agent,
            link_tags=dict(k.link_tags or {}),
        )
    if event_type == "rendering_failure":
        if (f := record.failure) is None:
            raise _missing(event_type, "failure")
        return RenderingFailureDetail(template_name=f.template_name, error_message=f.error_message)
    # subscription
    if (s := record.subscription) is None:
        raise _missing(event_type, "subscription")
    return SubscriptionDetail(
        timestamp=s.timestamp,
        contact_list=s.contact_list,
        source=s.source,
        new_topic_preferences=_preferences(s.new_topic_preferences),
        old_topic_preferences=_preferences(s.old_topic_preferences),
    )


def parse_ses_message(message: str | bytes) -> SesEvent | None:
    """Parse an SNS `Message` published by SES. Raises SesParseError when it is not one.

    Returns None for SES's plain-text topic validation message (`TOPIC_VALIDATION_TEXT`), which
    SES publishes once when an SNS event destination is created: acknowledge it, nothing to do.
    """
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    if text.strip() == TOPIC_VALIDATION_TEXT:
        return None
    if "\\u0000" in text:
        message = _NUL_ESCAPE.sub(lambda m: m.group() if m.group() == "\\\\" else "\\ufffd", text)
    try:
        record = _DECODER.decode(message)
    except msgspec.ValidationError as exc:
        raise SesParseError(f"not an SES event: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise SesParseError("not JSON") from exc
    except RecursionError as exc:  # the SNS verifier bounds depth; this is the decoder's own guard
        raise SesParseError("nested too deeply") from exc

    fmt: Literal["event_publishing", "notification"]
    if record.event_type is not None and record.notification_type is None:
        fmt, kinds, raw_type = "event_publishing", _EVENT_TYPES, record.event_type
    elif record.notification_type is not None and record.event_type is None:
        fmt, kinds, raw_type = "notification", _NOTIFICATION_TYPES, record.notification_type
    else:
        raise SesParseError("expected exactly one of eventType and notificationType")
    event_type = kinds.get(raw_type)
    if event_type is None:
        raise SesParseError(f"unsupported SES {fmt} type {raw_type[:64]!r}")

    mail = record.mail
    return SesEvent(
        event_type=event_type,
        format=fmt,
        ses_message_id=mail.message_id,
        mail_timestamp=mail.timestamp,
        source=mail.source,
        destination=list(mail.destination),
        tags={key: list(values) for key, values in mail.tags.items()},
        subject=mail.common_headers.subject if mail.common_headers is not None else None,
        source_arn=mail.source_arn,
        sending_account_id=mail.sending_account_id,
        detail=_detail(event_type, record),
    )
