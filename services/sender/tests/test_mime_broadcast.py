"""Broadcast emails carry the RFC 8058 one-click unsubscribe headers the API signed; transactional
ones never do; a broadcast email cannot bring its own."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest
from mailroom_sender.errors import MessageBuildError
from mailroom_sender.mime import build_message

from .conftest import queued

URL = "https://api.acme.test/v1/unsubscribe/v1.WyJ0ZW5fIl0.c2ln-_"


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_broadcast_has_both_headers_with_the_url_and_mailto() -> None:
    mailto = "mailto:unsubscribe@acme.test?subject=unsubscribe%20v1.x.y"
    msg = parse(build_message(queued(stream="broadcast", unsubscribe_url=URL, unsubscribe_mailto=mailto)))
    assert msg["List-Unsubscribe"] == f"<{URL}>, <{mailto}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"  # the body is untouched


def test_broadcast_without_mailto_has_the_url_alone() -> None:
    raw = build_message(queued(stream="broadcast", unsubscribe_url=URL))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    msg = parse(raw)
    assert msg["List-Unsubscribe"] == f"<{URL}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_transactional_has_none_even_with_a_url() -> None:
    msg = parse(build_message(queued(unsubscribe_url=URL)))
    assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize("name", ["List-Unsubscribe", "list-unsubscribe-post"])
def test_broadcast_refuses_the_tenants_own(name: str) -> None:
    with pytest.raises(MessageBuildError, match="List-Unsubscribe"):
        build_message(queued(stream="broadcast", unsubscribe_url=URL, headers={name: "<https://evil.test/>"}))


@pytest.mark.parametrize("url", [None, "", "https://a.test/u>, <https://evil.test", "javascript:x", "https://a b"])
def test_broadcast_needs_a_clean_url(url: str | None) -> None:
    with pytest.raises(MessageBuildError, match="unsubscribe URL"):
        build_message(queued(stream="broadcast", unsubscribe_url=url))
