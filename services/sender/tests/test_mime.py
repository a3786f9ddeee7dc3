"""MIME building: headers, Bcc never in the message, text from html, unicode, custom headers,
and refusal of anything that could inject a header."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from mailroom_contracts.events import Address
from mailroom_contracts.headers import MAX_HEADER_LENGTH, RESERVED_HEADERS, header_problem, is_reserved
from mailroom_sender.errors import MessageBuildError
from mailroom_sender.mime import build_message, html_to_text, recipients

from .conftest import queued


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_headers_and_alternative_parts() -> None:
    ev = queued(
        to=["a@example.org", "b@example.org"],
        cc=[Address(email="c@example.org", name="Cee")],
        bcc=[Address(email="hidden@example.org")],
        reply_to=[Address(email="support@mail.acme.test")],
        text="plain body",
        html="<p>html body</p>",
    )
    raw = build_message(ev)
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    msg = parse(raw)
    assert msg["From"] == "Acme <noreply@mail.acme.test>"
    assert msg["To"] == "a@example.org, b@example.org"
    assert msg["Cc"] == "Cee <c@example.org>"
    assert msg["Reply-To"] == "support@mail.acme.test"
    assert msg["Subject"] == "Your receipt"
    assert msg["Message-ID"] == f"<{ev.email_id}@mail.acme.test>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["Date"] is not None and msg["Date"].datetime is not None
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert parts[0].get_content().strip() == "plain body"
    assert parts[1].get_content().strip() == "<p>html body</p>"
    assert all("MIME-Version" not in p for p in parts)
    # Bcc is an envelope recipient only.
    assert "Bcc" not in msg and b"hidden@example.org" not in raw
    assert recipients(ev) == ["a@example.org", "b@example.org", "c@example.org", "hidden@example.org"]


def test_text_only_is_single_part() -> None:
    msg = parse(build_message(queued(html=None, text="just text")))
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "just text"


def test_text_generated_from_html_when_absent() -> None:
    html = (
        "<html><head><title>Receipt</title><style>p { color: red }</style></head><body>"
        "<h1>Hello&nbsp;there</h1><p>Your order <b>#42</b> &amp; more.</p>"
        "<script>alert('x')</script>"
        '<p>Track it <a href="https://acme.test/track?id=42&amp;x=1">here</a>.</p>'
        '<ul><li>One</li><li>Two</li></ul><a href="https://acme.test/">https://acme.test/</a>'
        '<img src="logo.png" alt="Acme logo"></body></html>'
    )
    msg = parse(build_message(queued(html=html, text=None)))
    plain, rich = list(msg.iter_parts())
    text = plain.get_content().replace("\r\n", "\n")
    assert rich.get_content().strip() == html
    assert "Hello there" in text
    assert "Your order #42 & more." in text
    assert "here (https://acme.test/track?id=42&x=1)" in text
    assert "- One\n- Two" in text
    assert "alert" not in text and "color: red" not in text and "Receipt" not in text
    assert text.count("https://acme.test/ ") == 1
    assert "Acme logo" in text


def test_html_to_text_blocks_and_breaks() -> None:
    assert html_to_text("<div>a<br>b</div><p>c</p>") == "a\nb\n\nc\n"
    assert html_to_text('<a href="mailto:x@y.z"></a>') == "x@y.z\n"


def test_unicode_subject_names_and_idn_domain() -> None:
    ev = queued(
        subject="Grüße — ваш заказ 🎉",
        from_=Address(email="noreply@mail.acme.test", name="Zoë, Ünïcode & Co"),
        to=["anna@bücher.example"],
        text="Héllo wörld",
        html=None,
    )
    raw = build_message(ev)
    assert raw.isascii()  # everything encoded: RFC 2047 headers, qp/base64 bodies
    msg = parse(raw)
    assert msg["Subject"] == "Grüße — ваш заказ 🎉"
    assert msg["From"].addresses[0].display_name == "Zoë, Ünïcode & Co"
    assert msg["To"] == "anna@xn--bcher-kva.example"
    assert msg.get_content().strip() == "Héllo wörld"
    assert recipients(ev) == ["anna@xn--bcher-kva.example"]


def test_custom_headers_are_kept() -> None:
    ev = queued(
        headers={
            "X-Entity-Ref-ID": "abc-123",
            "List-Unsubscribe": "<https://acme.test/u/1>",
            "X-Note": "café",
        }
    )
    msg = parse(build_message(ev))
    assert msg["X-Entity-Ref-ID"] == "abc-123"
    assert msg["List-Unsubscribe"] == "<https://acme.test/u/1>"
    assert msg["X-Note"] == "café"


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\r\nBcc: victim@example.org"},
        {"subject": "Hi\nX-Evil: 1"},
        {"headers": {"X-Ok": "a\r\nBcc: victim@example.org"}},
        {"headers": {"X-Bad\r\nBcc": "x"}},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"X-Nul": "a\0b"}},
        {"headers": {"Bcc": "victim@example.org"}},
        {"headers": {"dkim-signature": "v=1"}},
        {"from_": Address(email="noreply@mail.acme.test", name="Acme\r\nBcc: victim@example.org")},
        {"to": ["a@example.org\r\nBcc: victim@example.org"]},
        {"to": ["not-an-address"]},
        {"to": ["a b@example.org"]},
        {"cc": [Address(email="<a@example.org>")]},
        {"reply_to": [Address(email="a@exa mple.org")]},
    ],
)
def test_header_injection_is_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(MessageBuildError) as exc:
        build_message(queued(**overrides))
    assert exc.value.reason == "invalid_message"


@pytest.mark.parametrize("name", sorted(RESERVED_HEADERS))
def test_every_reserved_header_is_refused(name: str) -> None:
    # The API refuses the same set with 422 (mailroom_contracts.headers): nothing it accepts fails here.
    for spelling in (name, name.upper(), name.title()):
        with pytest.raises(MessageBuildError) as exc:
            build_message(queued(headers={spelling: "x"}))
        assert exc.value.reason == "invalid_message"
        assert "cannot be overridden" in str(exc.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # reserved families (by prefix) and their neighbours that are not
        ("Content-ID", "<a@b>"),
        ("Content-Language", "en"),
        ("X-SES-MESSAGE-TAGS", "mailroom_tenant_id=ten_other"),
        ("X-SES-LIST-MANAGEMENT-OPTIONS", "list"),
        ("Delivered-To", "a@example.org"),
        ("X-Content-Type", "x"),
        ("X-SES", "x"),
        ("List-Unsubscribe", "<https://acme.test/u/1>"),
        ("In-Reply-To", "<a@b>"),
        # name and length rules
        ("X-" + "n" * 74, "x"),
        ("X-" + "n" * 75, "x"),
        ("X-Long", "v" * (MAX_HEADER_LENGTH - len("X-Long"))),
        ("X-Long", "v" * (MAX_HEADER_LENGTH - len("X-Long") + 1)),
        ("X-Colon:", "x"),
        ("X-Ok", "a\rb"),
    ],
)
def test_sender_refuses_exactly_what_the_shared_rules_refuse(name: str, value: str) -> None:
    problem = header_problem(name, value)
    if problem is None:
        assert not is_reserved(name)
        msg = parse(build_message(queued(headers={name: value})))
        assert msg[name] is not None
    else:
        with pytest.raises(MessageBuildError) as exc:
            build_message(queued(headers={name: value}))
        assert problem in str(exc.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hi\u2028X-Evil: 1"},
        {"subject": "Hi\x85there"},
        {"subject": "Hi\vthere"},
        {"headers": {"X-Ok": "a\x1cb"}},
        {"from_": Address(email="noreply@mail.acme.test", name="Acme\u2029Bcc")},
        {"to": ["jörg@example.org"]},
        {"to": ["x" * 65 + "@example.org"]},
        {"headers": {f"X-H{i}": "v" for i in range(51)}},
    ],
)
def test_shared_message_rules_are_applied(overrides: dict[str, object]) -> None:
    """The rules the API now applies too (mailroom_contracts.message): refused here as well."""
    with pytest.raises(MessageBuildError) as exc:
        build_message(queued(**overrides))
    assert exc.value.reason == "invalid_message"


def test_non_ascii_bodies_are_base64_with_the_size_the_api_predicts() -> None:
    from mailroom_contracts.message import encoded_body_size

    msg = parse(build_message(queued(text="héllo wörld\n" * 50, html=None)))
    assert msg["Content-Transfer-Encoding"] == "base64"
    raw = build_message(queued(text="héllo wörld\n" * 50, html=None))
    assert len(raw.partition(b"\r\n\r\n")[2]) == encoded_body_size("héllo wörld\n" * 50)
