"""Email bodies: the send request, the acceptance, and the email log as tenants read it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from mailroom_contracts.events import Stream
from mailroom_contracts.message import MAX_ATTACHMENTS, MAX_CONTENT_ID, MAX_CUSTOM_HEADERS, MAX_FILENAME

from mailroom_api.http.body import Request
from mailroom_api.keys.schemas import Mode
from mailroom_api.templates.schemas import TemplateRef

MAX_SUBJECT = 998
MAX_RECIPIENTS = 50  # across to, cc and bcc (checked in validation); also each list's bound
Addresses = Annotated[list[str], msgspec.Meta(max_length=MAX_RECIPIENTS)]
MAX_TAGS = 10


class AttachmentIn(Request, frozen=True, kw_only=True):
    """A file to send with the email (rules: validation._attachments, mailroom_contracts.message)."""

    filename: Annotated[str, msgspec.Meta(max_length=MAX_FILENAME)]
    content: Annotated[str, msgspec.Meta(description="the file's bytes, base64 (RFC 4648, standard alphabet)")]
    content_type: Annotated[str, msgspec.Meta(max_length=255)] | None = None
    content_id: Annotated[str, msgspec.Meta(max_length=MAX_CONTENT_ID)] | None = None


class SendEmail(Request, frozen=True, kw_only=True):
    # SPEC §2 fields a later version implements; until then they are refused with a clear message.
    __not_yet_supported__: ClassVar[frozenset[str]] = frozenset()
    # Optional when the tenant has a default sender (PATCH /v1/settings).
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | Addresses
    cc: str | Addresses = []
    bcc: str | Addresses = []
    reply_to: str | Addresses = []
    # Required unless a template supplies it (validation.py says so naming `subject`).
    subject: Annotated[str, msgspec.Meta(max_length=MAX_SUBJECT)] | None = None
    html: str | None = None
    text: str | None = None
    # Values are checked one by one so errors can name `headers.X-Foo` / `tags.key`.
    headers: Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_CUSTOM_HEADERS)] = {}
    tags: Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_TAGS)] = {}
    metadata: dict[str, Any] | None = None
    # issue 16: files, inline images (content_id) and a calendar invite (RFC 5545 text).
    attachments: Annotated[list[AttachmentIn], msgspec.Meta(max_length=MAX_ATTACHMENTS)] = []
    ical_event: str | None = None
    # Streams and tracking: separate SES configuration sets. Tracking defaults to the from-domain's.
    stream: Stream = "transactional"
    track_opens: bool | None = None
    track_clicks: bool | None = None
    # Scheduling: RFC 3339 with an offset, in the future and at most 30 days ahead (validation.py).
    scheduled_at: datetime | None = None
    # Templates (issue 17): rendered at accept time into subject/html/text (templates/service.py);
    # a subject, html or text given here wins over the rendered one.
    template: TemplateRef | None = None


class EmailAccepted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    created_at: datetime


MAX_BATCH = 100
_BATCH_ITEM_SCHEMA = {
    "anyOf": [{"$ref": "#/components/schemas/SendEmail"}, {}],
    "description": "A `POST /v1/emails` body (SendEmail). An item that is not a valid one is refused alone: "
    "its entry in the answer's `data` says why (`error`, `message`, `param` within the item).",
}


class SendBatch(Request, frozen=True, kw_only=True):
    # Items are checked one by one (service.prepare_batch), each as a single send's body, so one bad
    # item fails alone, in the 200 answer. The document says so: an item is a SendEmail or, if not,
    # anything (refused alone) — a request with a bad item is not a bad request.
    emails: Annotated[
        list[Any],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_BATCH,
            extra_json_schema={"extra": {"items": _BATCH_ITEM_SCHEMA}},
        ),
    ]


class BatchItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item's outcome: `{index, id, status}` when accepted, `{index, error, message, param}`
    when refused. (One Struct with optional fields: msgspec describes no untagged union of Structs.)"""

    index: int
    id: str | msgspec.UnsetType = msgspec.UNSET
    status: str | msgspec.UnsetType = msgspec.UNSET
    # The code a single send would get: validation_error, payload_too_large, domain_not_verified, …
    error: str | msgspec.UnsetType = msgspec.UNSET
    message: str | msgspec.UnsetType = msgspec.UNSET
    # Within the item, as for a single send (`to[1]`, not `emails[3].to[1]`); null for the whole item.
    param: str | msgspec.UnsetType | None = msgspec.UNSET


class BatchResult(msgspec.Struct, frozen=True, kw_only=True):
    data: list[BatchItem]  # in the order of the request's items
    queued: int
    failed: int


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    type: Literal["to", "cc", "bcc"]
    status: str


class TimelineEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class EmailSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    from_: str = msgspec.field(name="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    tags: dict[str, str]
    metadata: dict[str, Any] | None
    status: str
    mode: Mode
    created_at: datetime
    last_event_at: datetime
    # Opens and clicks (issue 22): how many SES Open / Click events this email had (each counted
    # once; an Open needs open tracking, a Click click tracking). Not statuses.
    opens: int = 0
    clicks: int = 0


class AttachmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An attachment as it was sent (never its bytes); `size` is the decoded size in bytes."""

    filename: str
    size: int
    content_type: str
    content_id: str | None = None


class EmailTemplate(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int


class EmailDetail(EmailSummary, frozen=True, kw_only=True):
    """An email as listed, plus each recipient's status and the ordered timeline."""

    recipients: list[Recipient]
    events: list[TimelineEvent]
    # Only with ?include=content.
    html: str | msgspec.UnsetType | None = msgspec.UNSET
    text: str | msgspec.UnsetType | None = msgspec.UNSET
    headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    attachments: list[AttachmentInfo] | msgspec.UnsetType = msgspec.UNSET
    # With ?include=content: when the retention job removed the content (html, text, headers and
    # attachments are then null / empty); null while it is kept.
    content_expired_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    # Scheduling: when it is (or was) due to go out; null for an email sent at once.
    scheduled_at: datetime | None = None
    # Templates (issue 17): the template and version that rendered it; null without one.
    template: EmailTemplate | None = None


class EmailList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[EmailSummary]
    next_cursor: str | None


# ----------------------------------------------------------------------------- scheduling


class RescheduleEmail(Request, frozen=True, kw_only=True):
    """`PATCH /v1/emails/{id}`: a new time for a scheduled email (same rules as at send)."""

    scheduled_at: datetime


class EmailSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """A scheduled email after a reschedule (`scheduled`) or a cancel (`canceled`)."""

    id: str
    status: Literal["scheduled", "canceled"]
    scheduled_at: datetime | None
