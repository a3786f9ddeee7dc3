"""Checks on a send request beyond its JSON shape: addresses, recipients, subject, body,
custom headers, tags and metadata. Every failure names the offending field path (`to[2]`,
`headers.X-Foo`, `tags.team`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from email_validator import EmailNotValidError, validate_email
from mailroom_contracts.events import Address
from mailroom_contracts.headers import header_problem
from mailroom_contracts.ses import RESERVED_TAG_PREFIX, is_reserved_tag

from mailroom_api.emails.schemas import SendEmail
from mailroom_api.errors import validation

MAX_RECIPIENTS = 50
MAX_SUBJECT = 998
MAX_TAGS = 10
MAX_TAG_LENGTH = 256
MAX_METADATA_BYTES = 4096
TAG_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CONTROL = re.compile(r"[\r\n\x00]")


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


def parse_address(value: str, param: str) -> ParsedAddress:
    if _CONTROL.search(value):
        raise validation("addresses must not contain CR, LF or NUL", param)
    text = value.strip()
    if not text:
        raise validation("address must not be empty", param)
    try:
        parsed = validate_email(text, check_deliverability=False, test_environment=True, allow_display_name=True)
    except EmailNotValidError as exc:
        raise validation(f"invalid email address: {exc}", param) from None
    return ParsedAddress(
        original=text, email=parsed.normalized, name=parsed.display_name or None, domain=parsed.domain.lower()
    )


def _address_list(value: str | list[str], field: str, *, scalar_param: bool) -> list[ParsedAddress]:
    if isinstance(value, str):
        return [parse_address(value, field)] if scalar_param or value.strip() else []
    return [parse_address(item, f"{field}[{i}]") for i, item in enumerate(value)]


def _headers(headers: dict[str, Any]) -> dict[str, str]:
    """The header rules are the contracts' (the sender checks the same ones before SES)."""
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
        if not TAG_RE.match(key) or len(key) > MAX_TAG_LENGTH:
            raise validation("tag names may contain only ASCII letters, digits, '_' and '-'", param)
        if is_reserved_tag(key):
            raise validation(f"the tag prefix {RESERVED_TAG_PREFIX!r} is reserved", param)
        if not isinstance(value, str) or not TAG_RE.match(value) or len(value) > MAX_TAG_LENGTH:
            raise validation("tag values must be strings of ASCII letters, digits, '_' and '-'", param)
        out[key] = value
    return out


def validate_send(req: SendEmail) -> ValidEmail:
    sender = parse_address(req.from_, "from")
    to = _address_list(req.to, "to", scalar_param=True)
    cc = _address_list(req.cc, "cc", scalar_param=False)
    bcc = _address_list(req.bcc, "bcc", scalar_param=False)
    reply_to = _address_list(req.reply_to, "reply_to", scalar_param=False)
    if not to:
        raise validation("at least one recipient is required", "to")
    if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
        raise validation(f"at most {MAX_RECIPIENTS} recipients are allowed across to, cc and bcc", "to")
    subject = req.subject
    if not subject.strip():
        raise validation("subject is required", "subject")
    if "\r" in subject or "\n" in subject or "\x00" in subject:
        raise validation("subject must not contain CR, LF or NUL", "subject")
    if len(subject) > MAX_SUBJECT:
        raise validation(f"subject is longer than {MAX_SUBJECT} characters", "subject")
    if not req.html and not req.text:
        raise validation("one of html or text is required", "html")
    metadata = req.metadata
    if metadata is not None and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        raise validation(f"metadata is larger than {MAX_METADATA_BYTES} bytes of JSON", "metadata")
    return ValidEmail(
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
    )
