"""Event payloads. One frozen, kw_only, tagged Struct per event type.

Evolution rules (msgspec): only add fields with defaults; never rename, retype or remove a
field; decoders ignore unknown fields so old consumers read new events. A breaking change
gets a new tag and subject.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

Mode = Literal["live", "test"]
BounceType = Literal["Permanent", "Transient", "Undetermined"]
DomainStatus = Literal["pending", "verified", "partially_verified", "temporary_failure", "failed"]
RecordStatus = Literal["pending", "verified", "failed"]
Stream = Literal["transactional", "broadcast"]
TenantStatus = Literal["active", "paused", "blocked"]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event carries. `event_id` (evt_…) is also the JetStream Nats-Msg-Id."""

    event_id: str
    occurred_at: datetime
    tenant_id: str


class Address(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    name: str | None = None


# --------------------------------------------------------------------------- emails


class EmailEvent(Event, frozen=True, kw_only=True):
    email_id: str
    mode: Mode = "live"


class Attachment(msgspec.Struct, frozen=True, kw_only=True):
    """A file sent with an email: its bytes (base64 in JSON) and how the MIME part names them.
    `content_type` is decided by the API (given, or guessed from the filename); a `content_id`
    makes the part inline (`cid:` in the html, under multipart/related)."""

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    content_id: str | None = None


class ContentRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where an offloaded email's content is: an object in a JetStream Object Store bucket whose
    bytes (a msgpack `mailroom_contracts.content.EmailContent`) have this SHA-256 (hex) and size."""

    bucket: str
    name: str
    sha256: str
    size: int


class EmailQueued(EmailEvent, frozen=True, kw_only=True, tag="email.queued"):
    """An accepted email, with everything the sender needs to build and send it."""

    from_: Address = msgspec.field(name="from")
    to: list[Address]
    cc: list[Address] = []
    bcc: list[Address] = []
    reply_to: list[Address] = []
    subject: str
    html: str | None = None
    text: str | None = None
    headers: dict[str, str] = {}
    tags: dict[str, str] = {}
    metadata: dict[str, Any] | None = None
    created_at: datetime
    # Attachments (issue 16), in the order given; an RFC 5545 invite sent as a text/calendar
    # alternative and as invite.ics.
    attachments: list[Attachment] = []
    ical_event: str | None = None
    # Set when the content was too large to ride in the event: html, text, attachments and
    # ical_event are then empty here and live in the object it names (mailroom_contracts.content).
    content: ContentRef | None = None
    # --- streams and tracking (issue 16): the sender picks the SES configuration set from these.
    stream: Stream = "transactional"
    # Resolved at accept time (the request's value, else the from-domain's setting).
    track_opens: bool = False
    track_clicks: bool = False
    # Broadcast only: the api-signed one-click URL (RFC 8058) and an optional mailto, which the
    # sender writes as `List-Unsubscribe` (+ `List-Unsubscribe-Post`). The sender never signs.
    unsubscribe_url: str | None = None
    unsubscribe_mailto: str | None = None
    # Scheduling (issue 16): set when the email was accepted with `scheduled_at`. Such an event
    # waits in the api's scheduled outbox and is published at that time (its `occurred_at` is
    # that time too); the api's relay then moves the email from `scheduled` to `queued`.
    scheduled_at: datetime | None = None


class EmailSent(EmailEvent, frozen=True, kw_only=True, tag="email.sent"):
    """The provider accepted the message (SES SendEmail returned a MessageId)."""

    provider: Literal["ses", "simulator"]
    provider_message_id: str
    recipients: list[str] = []


class EmailFailed(EmailEvent, frozen=True, kw_only=True, tag="email.failed"):
    """The email will not be sent: provider rejected it, rendering failed, or we gave up."""

    reason: str
    message: str


class EmailDelivered(EmailEvent, frozen=True, kw_only=True, tag="email.delivered"):
    recipients: list[str]
    provider_message_id: str | None = None
    smtp_response: str | None = None


class BouncedRecipient(msgspec.Struct, frozen=True, kw_only=True):
    """One bounced recipient as SES reports it (issue 22): its own DSN action, status and diagnostic."""

    email: str
    action: str | None = None  # e.g. "failed"
    status: str | None = None  # DSN status, e.g. "5.1.1"
    diagnostic_code: str | None = None


class EmailBounced(EmailEvent, frozen=True, kw_only=True, tag="email.bounced"):
    recipients: list[str]
    bounce_type: BounceType
    bounce_subtype: str
    diagnostic_code: str | None = None  # the first recipient's that has one
    provider_message_id: str | None = None
    # Per recipient (issue 22): each one's action, status and diagnostic code, in SES's order.
    bounced_recipients: list[BouncedRecipient] = []


class EmailComplained(EmailEvent, frozen=True, kw_only=True, tag="email.complained"):
    recipients: list[str]
    feedback_type: str | None = None
    provider_message_id: str | None = None


class EmailDeliveryDelayed(EmailEvent, frozen=True, kw_only=True, tag="email.delivery_delayed"):
    recipients: list[str]
    delay_type: str | None = None
    provider_message_id: str | None = None


class EmailScheduled(EmailEvent, frozen=True, kw_only=True, tag="email.scheduled"):
    """An email accepted (or rescheduled) to be sent at `scheduled_at`; published at once. It
    carries what webhooks need about the email (never its bodies): its EmailQueued comes only at
    that time. A reschedule publishes another EmailScheduled (new event id, same email)."""

    from_: Address = msgspec.field(name="from")
    to: list[Address]
    cc: list[Address] = []
    bcc: list[Address] = []
    subject: str
    tags: dict[str, str] = {}
    metadata: dict[str, Any] | None = None
    created_at: datetime
    scheduled_at: datetime


class EmailCanceled(EmailEvent, frozen=True, kw_only=True, tag="email.canceled"):
    """A scheduled email was canceled before its time: it will never be sent."""

    scheduled_at: datetime | None = None  # when it would have been sent


class EmailProviderAccepted(EmailEvent, frozen=True, kw_only=True, tag="email.provider_accepted"):
    """SES published a Send event for this email (internal; settles in-doubt sends)."""

    provider_message_id: str


class EmailOpened(EmailEvent, frozen=True, kw_only=True, tag="email.opened"):
    """A recipient opened the email (SES Open event; the tracking pixel was loaded). Not a status:
    recorded in the timeline and counted per email. `ip` and `user_agent` are the opener's."""

    ip: str | None = None
    user_agent: str | None = None
    provider_message_id: str | None = None


class EmailClicked(EmailEvent, frozen=True, kw_only=True, tag="email.clicked"):
    """A recipient clicked a tracked link (SES Click event). Not a status: recorded in the
    timeline and counted per email."""

    link: str
    ip: str | None = None
    user_agent: str | None = None
    link_tags: dict[str, list[str]] = {}
    provider_message_id: str | None = None


class EmailUnsubscribed(EmailEvent, frozen=True, kw_only=True, tag="email.unsubscribed"):
    """Recipients of this email unsubscribed (SES Subscription event with an opt-out: unsubscribe
    from all, or from a topic). Not a status: the api records it in the timeline and adds each
    recipient to the tenant's suppression list with reason `unsubscribe`."""

    recipients: list[str]
    source: str | None = None  # SES's, e.g. "UnsubscribeHeader"
    contact_list: str | None = None
    unsubscribe_all: bool = False
    topics: list[str] = []  # the topics now OptOut
    provider_message_id: str | None = None


SuppressionReason = Literal["bounce", "complaint", "unsubscribe", "manual"]


class SuppressedRecipient(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    reason: SuppressionReason


class EmailSuppressed(EmailEvent, frozen=True, kw_only=True, tag="email.suppressed"):
    """Recipients of an accepted email that were dropped because the tenant's suppression list
    holds them (no SES call for them). Published by the api with the accept; not a status of the
    email (the others still go out), each dropped recipient's status is `suppressed`."""

    recipients: list[SuppressedRecipient]


# --------------------------------------------------------------------------- domains


class DomainRecord(msgspec.Struct, frozen=True, kw_only=True):
    purpose: Literal["dkim", "mail_from_mx", "mail_from_spf", "dmarc"]
    type: Literal["CNAME", "MX", "TXT"]
    name: str
    value: str
    priority: int | None = None
    required: bool = True
    status: RecordStatus = "pending"
    # Issue 18: what public DNS answered for this name and type at the last check (CNAME targets,
    # "priority host" for MX, each TXT record's strings joined), why the status is what it is
    # (e.g. "NXDOMAIN", "no MX record", "SERVFAIL"), and when it was checked.
    found: list[str] = []
    detail: str | None = None
    last_checked_at: datetime | None = None


class DomainSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The whole state of a domain; every domain event carries one."""

    domain_id: str
    tenant_id: str
    name: str
    status: DomainStatus
    region: str
    mail_from_domain: str
    records: list[DomainRecord]
    track_opens: bool = False
    track_clicks: bool = False
    created_at: datetime
    last_checked_at: datetime | None = None


class DomainEvent(Event, frozen=True, kw_only=True):
    domain: DomainSnapshot


class DomainCreated(DomainEvent, frozen=True, kw_only=True, tag="domain.created"):
    pass


class DomainVerified(DomainEvent, frozen=True, kw_only=True, tag="domain.verified"):
    pass


class DomainFailed(DomainEvent, frozen=True, kw_only=True, tag="domain.failed"):
    reason: str


class DomainStatusChanged(DomainEvent, frozen=True, kw_only=True, tag="domain.status_changed"):
    """Any other status move (pending, partially_verified, temporary_failure)."""

    previous_status: DomainStatus


class DomainUpdated(DomainEvent, frozen=True, kw_only=True, tag="domain.updated"):
    """The domain's settings changed (tracking defaults, PATCH /v1/domains/{id}); not a status move."""


class DomainDeleted(DomainEvent, frozen=True, kw_only=True, tag="domain.deleted"):
    """The tenant deleted the domain (and its SES identity); `domain` is its last state. Sends from
    it are refused from now on."""


# --------------------------------------------------------------------------- tenants


class TenantUpdated(Event, frozen=True, kw_only=True, tag="tenant.updated"):
    """A tenant's state after a status change (by the operator API, the CLI or the reputation
    guard). It carries the whole state, not the change: a consumer keeps, per tenant, the event
    with the latest `updated_at` and ignores older ones, so redelivery and reordering are harmless.

    `paused`: queued and scheduled emails are held (neither sent nor failed) until `active` again.
    `blocked`: queued emails are failed with reason `tenant_blocked`."""

    status: TenantStatus
    status_reason: str | None = None
    updated_at: datetime


# --------------------------------------------------------------------------- webhooks


WebhookDisabledReason = Literal["gone", "failing"]


class WebhookDisabled(Event, frozen=True, kw_only=True, tag="webhook.disabled"):
    """The webhooks service disabled a tenant's endpoint on its own: it answered `410 Gone`
    (`gone`), or every attempt failed for MAILROOM_WEBHOOKS_DISABLE_AFTER_FAILING_DAYS (`failing`,
    since `failing_since`). Its pending deliveries wait until the tenant enables it again (PATCH);
    a tenant's own PATCH `enabled: false` publishes nothing. One event per disabling, written to
    the webhooks service's outbox in the transaction that disabled it. The endpoint's URL is not
    included (tenants put tokens in them)."""

    webhook_id: str
    reason: WebhookDisabledReason
    disabled_at: datetime
    failing_since: datetime | None = None
    # The answer that decided it: the HTTP status (410, 500, …) or None, and the error class
    # (`http_410`, `timeout`, `connect_error`, …).
    last_status_code: int | None = None
    last_error: str | None = None


EMAIL_EVENT_TYPES: tuple[type[EmailEvent], ...] = (
    EmailQueued,
    EmailSent,
    EmailFailed,
    EmailDelivered,
    EmailBounced,
    EmailComplained,
    EmailDeliveryDelayed,
    EmailProviderAccepted,
    EmailScheduled,
    EmailCanceled,
    EmailOpened,
    EmailClicked,
    EmailUnsubscribed,
    EmailSuppressed,
)
DOMAIN_EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    DomainCreated,
    DomainVerified,
    DomainFailed,
    DomainStatusChanged,
    DomainUpdated,
    DomainDeleted,
)
TENANT_EVENT_TYPES: tuple[type[Event], ...] = (TenantUpdated,)
WEBHOOK_ENDPOINT_EVENT_TYPES: tuple[type[Event], ...] = (WebhookDisabled,)
ALL_EVENT_TYPES: tuple[type[Event], ...] = (
    EMAIL_EVENT_TYPES + DOMAIN_EVENT_TYPES + TENANT_EVENT_TYPES + WEBHOOK_ENDPOINT_EVENT_TYPES
)
