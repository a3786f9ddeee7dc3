"""The shared header rules and SES tag keys: what is refused, why, and what is let through."""

from __future__ import annotations

import pytest
from mailroom_contracts.headers import (
    MAX_HEADER_LENGTH,
    MAX_HEADER_NAME,
    RESERVED_HEADER_PREFIXES,
    RESERVED_HEADERS,
    header_problem,
    is_reserved,
)
from mailroom_contracts.ses import (
    MAILROOM_TAGS,
    RESERVED_TAG_PREFIX,
    TAG_EMAIL_ID,
    TAG_MODE,
    TAG_TENANT_ID,
    is_reserved_tag,
)

BREAK = "header names and values must not contain CR, LF or NUL (or any other line break)"

# Every name either end refused before the rules moved here (the API's 33, the sender's 25).
API_BEFORE = (
    "From To Cc Bcc Subject Date Message-ID Reply-To Sender Return-Path DKIM-Signature MIME-Version Content-Type "
    "Content-Transfer-Encoding Content-Disposition Received Resent-From Resent-To Resent-Cc Resent-Bcc Resent-Date "
    "Resent-Message-ID Resent-Sender X-SES-CONFIGURATION-SET X-SES-MESSAGE-TAGS X-SES-SOURCE-ARN X-SES-FROM-ARN "
    "X-SES-RETURN-PATH-ARN Feedback-ID ARC-Seal ARC-Message-Signature ARC-Authentication-Results "
    "Authentication-Results"
).split()
SENDER_BEFORE = (
    "From To Cc Bcc Reply-To Subject Date Message-ID MIME-Version Content-Type Content-Transfer-Encoding "
    "Content-Disposition Content-ID Sender Return-Path Received DKIM-Signature Delivered-To Resent-From Resent-To "
    "Resent-Cc Resent-Bcc Resent-Date Resent-Sender Resent-Message-ID"
).split()


def test_the_old_lists_are_what_they_were() -> None:
    assert len(API_BEFORE) == 33 and len(SENDER_BEFORE) == 25


@pytest.mark.parametrize("name", sorted({*API_BEFORE, *SENDER_BEFORE}))
def test_reserved_is_the_union_of_both_old_lists(name: str) -> None:
    assert is_reserved(name)
    assert is_reserved(name.lower()) and is_reserved(name.upper())
    assert header_problem(name, "x") == f"header {name} is set by Mailroom and cannot be overridden"


@pytest.mark.parametrize(
    "name", ["Content-Language", "content-md5", "Content-Base", "X-SES-LIST-MANAGEMENT-OPTIONS", "x-ses-anything"]
)
def test_reserved_prefixes_cover_the_whole_family(name: str) -> None:
    assert name.lower().startswith(RESERVED_HEADER_PREFIXES)
    assert is_reserved(name)
    assert header_problem(name, "x") is not None


@pytest.mark.parametrize(
    "name",
    [
        "X-Entity-Ref-ID",
        "List-Unsubscribe",  # a tenant's own; the sender does not set it
        "List-Unsubscribe-Post",
        "X-Content-Type",  # only names that start with the prefix are MIME's
        "In-Reply-To",
        "References",
        "X-SES",  # not an SES instruction: those all start with "X-SES-"
        "Contents",
        "x" * MAX_HEADER_NAME,
    ],
)
def test_ordinary_headers_are_allowed(name: str) -> None:
    assert not is_reserved(name)
    assert header_problem(name, "value with spaces and ünïcode") is None


def test_reserved_headers_lists_names_in_lower_case() -> None:
    assert all(h == h.lower() for h in RESERVED_HEADERS)
    assert {h.lower() for h in API_BEFORE + SENDER_BEFORE if not h.lower().startswith(RESERVED_HEADER_PREFIXES)} <= (
        RESERVED_HEADERS
    )


@pytest.mark.parametrize("brk", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r\n"])
def test_every_line_boundary_is_refused_in_names_and_values(brk: str) -> None:
    # Each of these is a str.splitlines() boundary: a mail library may fold or split a header on it.
    assert len(f"a{brk}b".splitlines()) == 2
    assert header_problem("X-Ok", f"a{brk}b") == BREAK
    assert header_problem(f"X-Ok{brk}", "b") == BREAK


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("X-Ok", "a\r\nBcc: victim@example.org", BREAK),
        ("X-Ok", "a\nb", BREAK),
        ("X-Ok", "a\rb", BREAK),
        ("X-Nul", "a\0b", BREAK),
        ("X-Bad\r\nBcc", "x", BREAK),
        ("Bad Name", "x", "invalid header name (printable ASCII except ':', at most 76 characters)"),
        ("X-Colon:", "x", "invalid header name (printable ASCII except ':', at most 76 characters)"),
        ("", "x", "invalid header name (printable ASCII except ':', at most 76 characters)"),
        ("X-Ünï", "x", "invalid header name (printable ASCII except ':', at most 76 characters)"),
        ("X-Tab\t", "x", "invalid header name (printable ASCII except ':', at most 76 characters)"),
        ("x" * (MAX_HEADER_NAME + 1), "x", "invalid header name (printable ASCII except ':', at most 76 characters)"),
        ("X-Long", "v" * (MAX_HEADER_LENGTH - len("X-Long") + 1), "header is too long (max 998 characters)"),
    ],
)
def test_header_problem_names_the_reason(name: str, value: str, reason: str) -> None:
    assert header_problem(name, value) == reason


def test_longest_allowed_header() -> None:
    assert header_problem("X-Long", "v" * (MAX_HEADER_LENGTH - len("X-Long"))) is None


def test_tag_keys_are_the_ones_ses_events_carry() -> None:
    # These exact strings are on every email already sent: SES echoes them back in its events.
    assert (TAG_EMAIL_ID, TAG_TENANT_ID, TAG_MODE) == ("mailroom_email_id", "mailroom_tenant_id", "mailroom_mode")
    assert MAILROOM_TAGS == (TAG_EMAIL_ID, TAG_TENANT_ID, TAG_MODE)
    assert all(is_reserved_tag(t) for t in MAILROOM_TAGS)
    assert RESERVED_TAG_PREFIX == "mailroom_"


@pytest.mark.parametrize(("name", "reserved"), [("mailroom_x", True), ("MAILROOM_email_id", True), ("team", False)])
def test_reserved_tag_prefix(name: str, reserved: bool) -> None:
    assert is_reserved_tag(name) is reserved
