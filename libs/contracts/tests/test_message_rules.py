"""The shared message rules: addresses, header text, tags, custom header count, and the body
encoding and size the sender builds (checked against the stdlib building the same parts)."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage

import pytest
from mailroom_contracts.message import (
    MAX_CUSTOM_HEADERS,
    address_problem,
    body_transfer_encoding,
    custom_headers_problem,
    encoded_body_size,
    html_to_text,
    message_size,
    tag_problem,
    text_problem,
    wire_address,
)

BREAKS = ["\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def test_breaks_are_exactly_the_splitlines_boundaries() -> None:
    for brk in BREAKS:
        assert len(f"a{brk}b".splitlines()) == 2


@pytest.mark.parametrize("brk", [*BREAKS, "\x00"])
def test_text_with_any_line_break_or_nul_is_refused(brk: str) -> None:
    assert text_problem(f"a{brk}b", "subject") is not None
    assert address_problem(f"a{brk}b@example.org") is not None


def test_ordinary_text_is_allowed() -> None:
    assert text_problem("Grüße — ваш заказ 🎉\t(tab is fine)", "subject") is None


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("a@example.org", True),
        ("x" * 64 + "@example.org", True),
        ("x" * 65 + "@example.org", False),
        ("jörg@example.org", False),  # no SMTPUTF8 for the SES envelope
        ("anna@bücher.example", True),  # the domain goes out as punycode
        ("a b@example.org", False),
        ("<a@example.org>", False),
        ("no-at-sign", False),
        ("@example.org", False),
        ("a@exa mple.org", False),
    ],
)
def test_addresses(email: str, ok: bool) -> None:
    assert (address_problem(email) is None) is ok


def test_wire_address_punycodes_the_domain() -> None:
    assert wire_address(" anna@Bücher.Example ") == "anna@xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        ("team", "core", True),
        ("a" * 256, "b" * 256, True),
        ("a" * 257, "b", False),
        ("team\n", "core", False),  # `$` would have let the final newline through
        ("team", "core\n", False),
        ("", "x", False),
        ("team", "", False),
        ("té", "x", False),
        ("team", 5, False),
    ],
)
def test_tags(key: str, value: object, ok: bool) -> None:
    assert (tag_problem(key, value) is None) is ok


def test_custom_header_count() -> None:
    assert custom_headers_problem(MAX_CUSTOM_HEADERS) is None
    assert custom_headers_problem(MAX_CUSTOM_HEADERS + 1) is not None


BODIES = [
    "",
    "plain ascii\n",
    "x" * 78,
    "x" * 79,
    "héllo wörld\n" * 100,
    "日本語" * 1000,
    "a\r\nb\rc\nd",
    "x" * 57,
    "x" * 56 + "é",
    "<p>" + "e" * 10_000 + "</p>",
]


@pytest.mark.parametrize("body", BODIES)
def test_encoded_body_size_is_what_the_stdlib_builds(body: str) -> None:
    """The sender sets the part's encoding with `body_transfer_encoding`; the size is then exact."""
    msg = EmailMessage(policy=policy.SMTP.clone(cte_type="7bit"))
    msg.set_content(body, subtype="plain", charset="utf-8", cte=body_transfer_encoding(body))
    raw = msg.as_bytes()
    _, _, payload = raw.partition(b"\r\n\r\n")
    assert msg["Content-Transfer-Encoding"] == body_transfer_encoding(body)
    assert len(payload) == encoded_body_size(body)


def test_message_size_bounds_the_built_message() -> None:
    text, html = "héllo\n" * 5000, "<p>" + "wörld " * 5000 + "</p>"
    msg = EmailMessage(policy=policy.SMTP.clone(cte_type="7bit"))
    msg["Subject"] = "Grüße 🎉" * 20
    msg["From"] = "Zoë <z@example.org>"
    msg["To"] = "a@example.org"
    msg.set_content(text, subtype="plain", charset="utf-8", cte=body_transfer_encoding(text))
    msg.add_alternative(html, subtype="html", charset="utf-8", cte=body_transfer_encoding(html))
    built = len(msg.as_bytes())
    bound = message_size(header_values=["Grüße 🎉" * 20, "Zoë <z@example.org>", "a@example.org"], bodies=[text, html])
    assert built <= bound <= built + 4096


def test_html_to_text_at_most_triples_the_bytes() -> None:
    # `<hr>` is the most expanding construct (4 bytes → "\n----------\n"); the API relies on this bound.
    for html in ("<hr>" * 1000, "<br>" * 1000, "<li>" * 1000, "&amp;" * 1000, "<p>é</p>" * 1000):
        assert len(html_to_text(html).encode()) <= 3 * len(html.encode()) + 1
