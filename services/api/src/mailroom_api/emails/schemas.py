"""Email bodies: the send request, the acceptance, and the email log as tenants read it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from mailroom_contracts.message import MAX_CUSTOM_HEADERS

from mailroom_api.http.body import Request
from mailroom_api.keys.schemas import Mode

MAX_SUBJECT = 998
MAX_RECIPIENTS = 50  # across to, cc and bcc (checked in validation); also each list's bound
Addresses = Annotated[list[str], msgspec.Meta(max_length=MAX_RECIPIENTS)]
MAX_TAGS = 10


class SendEmail(Request, frozen=True, kw_only=True):
    # SPEC §2 fields a later version implements; until then they are refused with a clear message.
    __not_yet_supported__: ClassVar[frozenset[str]] = frozenset(
        {"template", "attachments", "track_opens", "track_clicks", "stream"}
    )
    from_: str = msgspec.field(name="from")
    to: str | Addresses
    cc: str | Addresses = []
    bcc: str | Addresses = []
    reply_to: str | Addresses = []
    subject: Annotated[str, msgspec.Meta(max_length=MAX_SUBJECT)]
    html: str | None = None
    text: str | None = None
    # Values are checked one by one so errors can name `headers.X-Foo` / `tags.key`.
    headers: Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_CUSTOM_HEADERS)] = {}
    tags: Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_TAGS)] = {}
    metadata: dict[str, Any] | None = None
    # Scheduling: RFC 3339 with an offset, in the future and at most 30 days ahead (validation.py).
    scheduled_at: datetime | None = None


class EmailAccepted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    status: str
    created_at: datetime


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


class EmailDetail(EmailSummary, frozen=True, kw_only=True):
    """An email as listed, plus each recipient's status and the ordered timeline."""

    recipients: list[Recipient]
    events: list[TimelineEvent]
    # Only with ?include=content.
    html: str | msgspec.UnsetType | None = msgspec.UNSET
    text: str | msgspec.UnsetType | None = msgspec.UNSET
    headers: dict[str, str] | msgspec.UnsetType = msgspec.UNSET
    # Scheduling: when it is (or was) due to go out; null for an email sent at once.
    scheduled_at: datetime | None = None


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
