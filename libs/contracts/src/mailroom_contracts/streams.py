"""JetStream streams and durable pull consumers, declared once here.

Services reconcile these at start (create and update), so a changed definition rolls out
with a deploy. Every consumer uses explicit acks. Retries end: the kit's consumer loop gives a
message at most `max_deliveries` deliveries (transient failures back off between them), then
publishes it as a dead letter to `mailroom.dlq.<durable>` (stream MAILROOM_DLQ) and terminates
it. The server-side `max_deliver` stays unlimited (-1) so JetStream itself never stops
redelivering a message the loop has not dead-lettered yet: nothing is silently dropped.
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
    # Server-side limit; keep -1: the kit's loop enforces `max_deliveries` and dead-letters.
    max_deliver: int = -1
    # Deliveries before the kit dead-letters a message whose handler keeps failing. 20 spans the
    # kit's backoff schedule (0.5 s … 5 min) for about an hour.
    max_deliveries: int = 20


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
TENANT_STREAM = StreamSpec(
    name="MAILROOM_TENANT",
    subjects=[subjects.TENANT_ALL],
    description="Tenant state changes (status and its reason), for services that keep a tenant read model",
)
WEBHOOK_STREAM = StreamSpec(
    name="MAILROOM_WEBHOOK",
    subjects=[subjects.WEBHOOK_ALL],
    description="Webhook endpoint notices: an endpoint disabled by the webhooks service (410 Gone, failing for days)",
)
DLQ_STREAM = StreamSpec(
    name="MAILROOM_DLQ",
    subjects=[subjects.DLQ_ALL],
    description="Dead letters: messages a consumer gave up on (mailroom.dlq.<durable>), kept for replay",
    max_age_seconds=90 * 24 * 3600,
)
STREAMS: tuple[StreamSpec, ...] = (EMAIL_STREAM, DOMAIN_STREAM, TENANT_STREAM, WEBHOOK_STREAM, DLQ_STREAM)

SENDER_QUEUED = ConsumerSpec(
    durable="sender-queued",
    stream=EMAIL_STREAM.name,
    filter_subjects=[subjects.EMAIL_QUEUED],
    description="sender: builds and sends queued emails",
    ack_wait_seconds=30.0,
    max_ack_pending=256,
    # An in-doubt send is re-checked every ~15 s for up to 10 min (about 40 deliveries) before any
    # transient retry counts; give an accepted email many hours before it needs an operator.
    max_deliveries=120,
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
    # Not EMAIL_QUEUED: a plain email's `queued` entry is written at accept, and a scheduled one
    # moves to `queued` in the api relay's own transaction (emails/scheduling.mark_queued).
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
    # Above the default wait for a missing email summary (30 deliveries), after which the event
    # goes out without one: that wait ends on its own before the dead letter would.
    max_deliveries=40,
)
WEBHOOKS_DOMAINS = ConsumerSpec(
    durable="webhooks-domains",
    stream=DOMAIN_STREAM.name,
    filter_subjects=[subjects.DOMAIN_VERIFIED, subjects.DOMAIN_FAILED, subjects.DOMAIN_STATUS_CHANGED],
    description="webhooks: fans domain events out to endpoints",
)
SENDER_TENANTS = ConsumerSpec(
    durable="sender-tenants",
    stream=TENANT_STREAM.name,
    filter_subjects=[subjects.TENANT_UPDATED],
    description="sender: keeps its tenant read model (paused tenants' emails held, blocked ones' failed)",
)
CONSUMERS: tuple[ConsumerSpec, ...] = (
    SENDER_QUEUED,
    SENDER_PROVIDER_ACCEPTED,
    API_EMAIL_LOG,
    API_DOMAINS,
    WEBHOOKS_EMAIL,
    WEBHOOKS_DOMAINS,
    SENDER_TENANTS,
)
