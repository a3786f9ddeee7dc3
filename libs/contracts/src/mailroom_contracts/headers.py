"""The rules for an email's custom `headers`, shared by the API (which refuses a bad header with
422 before the email is accepted) and the sender (the last check before SES), so the two ends
can never disagree about what is allowed. Pure functions; no I/O.

A header is refused when its name or value contains a line boundary of any kind (CR, LF and every
other `str.splitlines()` boundary: VT, FF, FS, GS, RS, NEL, U+2028, U+2029) or NUL (header or
envelope injection; a mail library may fold or split on any of them), its name is not an RFC 5322
field name (printable US-ASCII except `:`) of at most `MAX_HEADER_NAME` characters, it is reserved
(`is_reserved`), or name plus value exceed the RFC 5322 line limit of `MAX_HEADER_LENGTH` characters.
"""

from __future__ import annotations

import re
from typing import Final

from mailroom_contracts.message import has_break_or_nul

# Exact names (compared case-insensitively) that Mailroom writes itself, that only a mail server
# may add, or that would let a tenant pass for someone else:
RESERVED_HEADERS: Final = frozenset(
    h.lower()
    for h in (
        # the sender writes these from the email's fields
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        # identity and trace headers only the sending or receiving servers may set
        "Sender",
        "Return-Path",
        "Received",
        "Delivered-To",
        "DKIM-Signature",
        "Feedback-ID",
        "Authentication-Results",
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
        # RFC 5322 resent fields: a re-sent message is not something a tenant can claim
        "Resent-From",
        "Resent-To",
        "Resent-Cc",
        "Resent-Bcc",
        "Resent-Date",
        "Resent-Message-ID",
        "Resent-Sender",
    )
)
# Whole families, by prefix (lower case):
# - `content-`: every MIME header that describes the body (RFC 2045 §9 reserves the prefix for
#   exactly that) and the sender builds the body, so a tenant's Content-Type, Content-ID,
#   Content-Transfer-Encoding, ... would describe a body it did not build.
# - `x-ses-`: SES reads and strips these as instructions (configuration set, message tags, source
#   ARNs); a tenant's X-SES-MESSAGE-TAGS or X-SES-CONFIGURATION-SET could forge the tags events are
#   matched by, or send outside the configuration set that reports them.
RESERVED_HEADER_PREFIXES: Final = ("content-", "x-ses-")

MAX_HEADER_LENGTH: Final = 998  # RFC 5322 §2.1.1: `name: value` on one line, CRLF excluded
MAX_HEADER_NAME: Final = 76  # the name and ": " fit the recommended 78-column first line when folded
HEADER_NAME_RE: Final = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext: printable ASCII but ":"


def has_control(value: str) -> bool:
    """True when `value` holds any line boundary or NUL: anything that could end a header line early."""
    return has_break_or_nul(value)


def is_reserved(name: str) -> bool:
    """True when `name` (any case) is a header Mailroom sets or never lets a tenant set."""
    lower = name.lower()
    return lower in RESERVED_HEADERS or lower.startswith(RESERVED_HEADER_PREFIXES)


def header_problem(name: str, value: str) -> str | None:
    """Why the custom header `name: value` is refused, or None when it is allowed."""
    if has_control(name) or has_control(value):
        return "header names and values must not contain CR, LF or NUL (or any other line break)"
    if not HEADER_NAME_RE.fullmatch(name) or len(name) > MAX_HEADER_NAME:
        return f"invalid header name (printable ASCII except ':', at most {MAX_HEADER_NAME} characters)"
    if is_reserved(name):
        return f"header {name} is set by Mailroom and cannot be overridden"
    if len(name) + len(value) > MAX_HEADER_LENGTH:
        return f"header is too long (max {MAX_HEADER_LENGTH} characters)"
    return None
