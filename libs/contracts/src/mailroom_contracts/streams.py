"""JetStream streams and durable pull consumers, declared once here.

Services reconcile these at start (create and update), so a changed definition rolls out
with a deploy. Every consumer uses explicit acks; `max_deliver=-1` because transient
failures are retried with backoff by the consumer loop and permanent ones are turned into
`failed` events by the handler: nothing is silently dropped.
"""

from __future__ import annotations

import msgspec

from mailroom_contracts import subjects


class StreamSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    subjects: list[str]
    description: str
    max_age_seconds: float = 14 * 24 * 3600
    # JetStream drops a re-published message with the same Nats-Msg-Id inside this window;
    # consumers are idempotent by event id beyond it.
    duplicate_window_seconds: float = 30 * 60
    max_msg_size: int = 16 * 1024 * 1024


class ConsumerSpec(msgspec.Struct, frozen=True, kw_only=True):
    durable: str
    stream: str
    filter_subjects: list[str]
    description: str
    ack_wait_seconds: float = 30.0
    max_ack_pending: int = 1000
    max_deliver: int = -1


EMAIL_STREAM = StreamSpec(
    name="MAILROOM_EMAIL",
    subjects=[subjects.EMAIL_ALL],
    description="Email lifecycle events: queued, sent, failed, delivered, bounced, complained, ...",
)
DOMAIN_STREAM = StreamSpec(
    name="MAILROOM_DOMAIN",
    subjects=[subjects.DOMAIN_ALL],
    description="Domain lifecycle: created, verified, failed, status changes",
)
STREAMS: tuple[StreamSpec, ...] = (EMAIL_STREAM, DOMAIN_STREAM)

SENDER_QUEUED = ConsumerSpec(
    durable="sender-queued",
    stream=EMAIL_STREAM.name,
    filter_subjects=[subjects.EMAIL_QUEUED],
    description="sender: builds and sends queued emails",
    ack_wait_seconds=30.0,
    max_ack_pending=256,
)
SENDER_PROVIDER_ACCEPTED = ConsumerSpec(
    durable="sender-provider-accepted",
    stream=EMAIL_STREAM.name,
    filter_subjects=[subjects.EMAIL_PROVIDER_ACCEPTED],
    description="sender: settles in-doubt sends from SES Send events",
)
API_EMAIL_LOG = ConsumerSpec(
    durable="api-email-log",
    stream=EMAIL_STREAM.name,
    filter_subjects=list(subjects.EMAIL_LIFECYCLE),
    description="api: projects lifecycle events into the email log read model",
)
API_DOMAINS = ConsumerSpec(
    durable="api-domains",
    stream=DOMAIN_STREAM.name,
    filter_subjects=[subjects.DOMAIN_ALL],
    description="api: projects domain events into the tenant's domain read model",
)
WEBHOOKS_EMAIL = ConsumerSpec(
    durable="webhooks-email",
    stream=EMAIL_STREAM.name,
    filter_subjects=[subjects.EMAIL_QUEUED, *subjects.EMAIL_LIFECYCLE],
    description="webhooks: records email summaries and fans lifecycle events out to endpoints",
)
WEBHOOKS_DOMAINS = ConsumerSpec(
    durable="webhooks-domains",
    stream=DOMAIN_STREAM.name,
    filter_subjects=[subjects.DOMAIN_VERIFIED, subjects.DOMAIN_FAILED, subjects.DOMAIN_STATUS_CHANGED],
    description="webhooks: fans domain events out to endpoints",
)
CONSUMERS: tuple[ConsumerSpec, ...] = (
    SENDER_QUEUED,
    SENDER_PROVIDER_ACCEPTED,
    API_EMAIL_LOG,
    API_DOMAINS,
    WEBHOOKS_EMAIL,
    WEBHOOKS_DOMAINS,
)
