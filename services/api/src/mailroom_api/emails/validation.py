"""Checks on a send request beyond its JSON shape: addresses, recipients, subject, body,
custom headers, tags, metadata, attachments, the invite and the size of the message the sender
will build. Every failure names the offending field path (`to[2]`, `headers.X-Foo`, `tags.team`,
`attachments[1].content`).

Without `text`, the text part is generated from `html` here (so the log shows exactly what is
sent, and the sender does not generate it again).

What the sender can build and SES send is decided by `mailroom_contracts.message` and
`mailroom_contracts.headers`, the rules the sender applies too: whatever is accepted here never
fails there as an invalid message."""

from __future__ import annotations

import binascii
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from email_validator import EmailNotValidError, validate_email
from mailroom_contracts.events import Address, Attachment, Stream
from mailroom_contracts.headers import header_problem
from mailroom_contracts.message import (
    MAX_ATTACHMENTS,
    address_problem,
    attachment_sizes,
    content_id_problem,
    content_type_problem,
    custom_headers_problem,
    encoded_body_size,
    filename_problem,
    generated_text_size_bound,
    guess_content_type,
    has_break_or_nul,
    html_to_text,
    ical_problem,
    message_size,
    tag_problem,
    text_problem,
)
from mailroom_contracts.ses import RESERVED_TAG_PREFIX, is_reserved_tag

from mailroom_api.emails.schemas import MAX_RECIPIENTS, MAX_SUBJECT, MAX_TAGS, AttachmentIn, SendEmail
from mailroom_api.errors import ApiError, validation

MAX_METADATA_BYTES = 4096


@dataclass(frozen=True)
class ParsedAddress:
    original: str  # as given (trimmed), e.g. "Acme <noreply@acme.com>"
    email: str  # normalized bare address
    name: str | None
    domain: str

    def contract(self) -> Address:
        return Address(email=self.email, name=self.name)


@dataclass(frozen=True)
class ValidEmail:
    sender: ParsedAddress
    to: list[ParsedAddress]
    cc: list[ParsedAddress]
    bcc: list[ParsedAddress]
    reply_to: list[ParsedAddress]
    subject: str
    html: str | None
    text: str | None
    headers: dict[str, str]
    tags: dict[str, str]
    metadata: dict[str, Any] | None
    attachments: list[Attachment]
    ical_event: str | None
    # Streams and tracking (resolved: the request's choice, else the from-domain's defaults).
    stream: Stream = "transactional"
    track_opens: bool = False
    track_clicks: bool = False
    scheduled_at: datetime | None = None  # aware, UTC; None: send at once
    # Templates (issue 17): which template (and version) rendered subject/html/text.
    template_id: str | None = None
    template_version: int | None = None


def parse_address(value: str, param: str) -> ParsedAddress:
    parsed = _remembered_address(value) if len(value) <= _REMEMBERED_LENGTH else _parse_address(value)
    if isinstance(parsed, str):
        raise validation(parsed, param)
    return parsed


def _parse_address(value: str) -> ParsedAddress | str:
    """The parsed address, or why it is refused."""
    # Display names go into headers as given: every line boundary is refused, not only CR/LF.
    if has_break_or_nul(value):
        return "addresses must not contain line breaks (CR, LF, U+2028, ...) or NUL"
    text = value.strip()
    if not text:
        return "address must not be empty"
    try:
        parsed = validate_email(text, check_deliverability=False, test_environment=True, allow_display_name=True)
    except EmailNotValidError as exc:
        return f"invalid email address: {exc}"
    problem = address_problem(parsed.normalized)  # what the sender can put on the SES envelope
    if problem is not None:
        return problem
    return ParsedAddress(
        original=text, email=parsed.normalized, name=parsed.display_name or None, domain=parsed.domain.lower()
    )


# Senders (and often recipients) repeat from request to request, and email-validator's checks
# are the costliest step of a send's validation: the verdict on an address text is remembered
# (texts of a plausible length only, so the cache stays small whatever clients send).
_REMEMBERED_LENGTH = 512
_remembered_address = functools.lru_cache(maxsize=4096)(_parse_address)


def _address_list(value: str | list[str], field: str, *, scalar_param: bool) -> list[ParsedAddress]:
    if isinstance(value, str):
        return [parse_address(value, field)] if scalar_param or value.strip() else []
    return [parse_address(item, f"{field}[{i}]") for i, item in enumerate(value)]


def _headers(headers: dict[str, Any]) -> dict[str, str]:
    """The header rules are the contracts' (the sender checks the same ones before SES)."""
    too_many = custom_headers_problem(len(headers))
    if too_many is not None:
        raise validation(too_many, "headers")
    out: dict[str, str] = {}
    for name, value in headers.items():
        param = f"headers.{name}"
        if not isinstance(value, str):
            raise validation("header values must be strings", param)
        problem = header_problem(name, value)
        if problem is not None:
            raise validation(problem, param)
        out[name] = value
    return out


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise validation(f"at most {MAX_TAGS} tags are allowed", "tags")
    out: dict[str, str] = {}
    for key, value in tags.items():
        param = f"tags.{key}"
        problem = tag_problem(key, value)
        if problem is not None:
            raise validation(problem, param)
        if is_reserved_tag(key):
            raise validation(f"the tag prefix {RESERVED_TAG_PREFIX!r} is reserved", param)
        out[key] = value
    return out


def _decode_base64(value: str, param: str) -> bytes:
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        pass
    compact = "".join(value.split())  # MIME-style line breaks are tolerated
    if compact != value:
        try:
            return binascii.a2b_base64(compact, strict_mode=True)
        except (binascii.Error, ValueError):
            pass
    raise validation("content must be base64 (RFC 4648 standard alphabet, with padding)", param)


def _attachments(items: list[AttachmentIn]) -> list[Attachment]:
    if len(items) > MAX_ATTACHMENTS:
        raise validation(f"at most {MAX_ATTACHMENTS} attachments are allowed", "attachments")
    out: list[Attachment] = []
    content_ids: set[str] = set()
    for i, item in enumerate(items):
        param = f"attachments[{i}]"
        problem = filename_problem(item.filename)
        if problem is not None:
            raise validation(problem, f"{param}.filename")
        if item.content_type is None:
            content_type = guess_content_type(item.filename)
        else:
            content_type = item.content_type.strip().lower()
            problem = content_type_problem(content_type)
            if problem is not None:
                raise validation(problem, f"{param}.content_type")
        if item.content_id is not None:
            problem = content_id_problem(item.content_id)
            if problem is not None:
                raise validation(problem, f"{param}.content_id")
            if item.content_id in content_ids:
                raise validation("content_id is used by another attachment", f"{param}.content_id")
            content_ids.add(item.content_id)
        content = _decode_base64(item.content, f"{param}.content")
        out.append(
            Attachment(filename=item.filename, content=content, content_type=content_type, content_id=item.content_id)
        )
    return out


# --------------------------------------------------------------------------- streams, tracking, default sender

# Mailroom writes these on broadcast emails (RFC 8058); a tenant's own would contradict them.
# Their size at most: two URIs of at most ~1 KiB each (a token is ~600 characters for the longest
# address, the public URL and the mailto address come on top), folded, plus the -Post header.
_BROADCAST_HEADER_BYTES = 2 * 1024 + 100
_LIST_UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


def _sender(from_: str | None, default_from: str | None) -> ParsedAddress:
    """`from`, else the tenant's default sender (checked as if it had been given as `from`)."""
    if from_ is not None:
        return parse_address(from_, "from")
    if default_from is None:
        raise validation("from is required (or set a default sender: PATCH /v1/settings)", "from")
    return parse_address(default_from, "from")


def _check_broadcast(
    req: SendEmail, to: list[ParsedAddress], cc: list[ParsedAddress], bcc: list[ParsedAddress]
) -> None:
    """A broadcast email goes to one recipient: its one-click unsubscribe link names that address
    (a header is per message, and any recipient could press it)."""
    if req.stream != "broadcast":
        return
    if len(to) != 1:
        raise validation("a broadcast email has exactly one recipient in to (send one email per recipient)", "to")
    if cc or bcc:
        raise validation("a broadcast email has no cc or bcc (send one email per recipient)", "cc" if cc else "bcc")
    for name in req.headers:
        if name.lower() in _LIST_UNSUBSCRIBE_HEADERS:
            raise validation("Mailroom sets the List-Unsubscribe headers of broadcast emails", f"headers.{name}")


def _tracking(req: SendEmail, defaults: tuple[bool, bool]) -> tuple[bool, bool]:
    opens = defaults[0] if req.track_opens is None else req.track_opens
    clicks = defaults[1] if req.track_clicks is None else req.track_clicks
    return opens, clicks


def check_message_size(email: ValidEmail, limit: int) -> int:
    """413 when the message the sender will build (text, html, the invite and the attachments,
    encoded as the contracts say) is over `limit` bytes; else its size."""
    addresses = [a.original for a in (email.sender, *email.to, *email.cc, *email.reply_to)]
    header_values = [*addresses, email.subject, *email.headers, *email.headers.values()]
    bodies = [b for b in (email.text, email.html, email.ical_event) if b is not None]
    parts = attachment_sizes(
        ((a.filename, a.content_type, a.content_id, len(a.content)) for a in email.attachments), email.ical_event
    )
    extra = _BROADCAST_HEADER_BYTES if email.stream == "broadcast" else 0
    return _within(extra + message_size(header_values=header_values, bodies=bodies, parts=parts), limit)


def _within(size: int, limit: int) -> int:
    if size > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"the message would be about {size} bytes once built and encoded; the limit is {limit}",
        )
    return size


def validate_send(
    req: SendEmail,
    *,
    max_message_bytes: int,
    default_from: str | None = None,
    domain_tracking: Mapping[str, tuple[bool, bool]] | None = None,
) -> ValidEmail:
    """`default_from` is used when `from` is omitted; `domain_tracking` ({domain: (opens, clicks)})
    gives the from-domain's tracking defaults. A missing text stays missing: the sender generates
    it from html (`html_to_text`), and the size check counts it by a bound of its size."""
    sender = _sender(req.from_, default_from)
    to = _address_list(req.to, "to", scalar_param=True)
    cc = _address_list(req.cc, "cc", scalar_param=False)
    bcc = _address_list(req.bcc, "bcc", scalar_param=False)
    reply_to = _address_list(req.reply_to, "reply_to", scalar_param=False)
    if not to:
        raise validation("at least one recipient is required", "to")
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise validation(f"at most {MAX_RECIPIENTS} recipients are allowed across to, cc and bcc", "to")
    subject = req.subject or ""  # None: no subject given and no template supplied one
    if not subject.strip():
        raise validation("subject is required", "subject")
    problem = text_problem(subject, "subject")
    if problem is not None:
        raise validation(problem, "subject")
    if len(subject) > MAX_SUBJECT:
        raise validation(f"subject is longer than {MAX_SUBJECT} characters", "subject")
    if not req.html and not req.text:
        raise validation("one of html or text is required", "html")
    metadata = req.metadata
    if metadata is not None and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise validation(f"metadata is larger than {MAX_METADATA_BYTES} bytes of JSON", "metadata")
    if req.ical_event is not None:
        problem = ical_problem(req.ical_event)
        if problem is not None:
            raise validation(problem, "ical_event")
    attachments = _attachments(req.attachments) if req.attachments else []
    _check_broadcast(req, to, cc, bcc)
    track_opens, track_clicks = _tracking(req, (domain_tracking or {}).get(sender.domain, (False, False)))
    email = ValidEmail(
        sender=sender,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        html=req.html,
        text=req.text,
        headers=_headers(req.headers),
        tags=_tags(req.tags),
        metadata=metadata,
        attachments=attachments,
        ical_event=req.ical_event,
        stream=req.stream,
        track_opens=track_opens,
        track_clicks=track_clicks,
        scheduled_at=check_scheduled_at(req.scheduled_at),
    )
    # Without the text to generate first: a lower bound, so an oversized html is refused before
    # its conversion. The sender generates the text (issue 15: not on the accept path); the text's
    # size is counted by a bound of it, and only an html near the limit is converted to be sure.
    size = check_message_size(email, max_message_bytes)
    if email.text is None and email.html is not None:
        if size + generated_text_size_bound(email.html) > max_message_bytes:
            _within(size + encoded_body_size(html_to_text(email.html)), max_message_bytes)
    return email


# ----------------------------------------------------------------------------- scheduling

# How far ahead an email may be scheduled, and how far in the past a `scheduled_at` may be (a
# client clock a little ahead of ours): such an email is accepted as scheduled and sent at once.
MAX_SCHEDULE_AHEAD = timedelta(days=30)
SCHEDULE_CLOCK_SKEW = timedelta(seconds=60)


def check_scheduled_at(value: datetime | None, *, now: datetime | None = None) -> datetime | None:
    """`scheduled_at` (send and reschedule): it must carry an offset, lie in the future (less the
    clock-skew allowance) and at most 30 days ahead; returned in UTC."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise validation("scheduled_at needs a UTC offset (RFC 3339), e.g. 2030-01-01T09:00:00Z", "scheduled_at")
    now = now or datetime.now(UTC)
    at = value.astimezone(UTC)
    if at < now - SCHEDULE_CLOCK_SKEW:
        raise validation("scheduled_at is in the past", "scheduled_at")
    if at > now + MAX_SCHEDULE_AHEAD:
        raise validation(f"scheduled_at is more than {MAX_SCHEDULE_AHEAD.days} days ahead", "scheduled_at")
    return at
