"""MIME construction, written directly (no `email.message` object per send).

What a message may contain is `mailroom_contracts.message` and `mailroom_contracts.headers`: the
same rules the API applied before it accepted the email (so nothing it accepts fails here). This
module is the last line before SES, so it checks them again and refuses anything that could inject
a header or an envelope recipient on its own. The html → text fallback and the body encoding are
the contracts' too, so the API knows the built size before it accepts.

The message is the one the standard library's `email` package built here before (its SMTP policy,
7-bit clean), written with string operations at a fraction of the cost:
- CRLF line ends; header lines folded at whitespace to 78 columns where the value allows, never
  over 998; bodies as the contracts choose (`body_transfer_encoding`): 7bit, or base64 in 76-column
  lines, byte for byte as the stdlib lays them out (so `encoded_body_size` stays exact).
- Header text that is not plain printable ASCII (or could be mistaken for an encoded word)
  becomes RFC 2047 `=?utf-8?b?...?=` words of at most 75 characters, each holding whole
  characters; display names that are not atoms become quoted strings or encoded words.
- Bodies that are several parts are `multipart/alternative` (text then html) under a random
  boundary that no body contains.
- Attachments (base64, headers from `mailroom_contracts.message.attachment_head`: RFC 2231
  filenames when not plain ASCII): the message becomes `multipart/mixed` (the body, then the
  attachments); parts with a `content_id` go inline next to the html under `multipart/related`
  (type text/html); an `ical_event` is a third alternative, `text/calendar; method=REQUEST`, and
  the `invite.ics` attachment. Without attachments or invite the layout is exactly as before.
The output parses with `email.parser` (policy=default) back to exactly these values (a property
test holds it to that).
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import format_datetime

from mailroom_contracts.events import Address, Attachment, EmailQueued
from mailroom_contracts.headers import header_problem
from mailroom_contracts.message import (
    INVITE_CONTENT_TYPE,
    INVITE_FILENAME,
    MAX_ATTACHMENTS,
    attachment_head,
    body_transfer_encoding,
    content_id_problem,
    content_type_problem,
    custom_headers_problem,
    filename_problem,
    html_to_text,
    ical_problem,
    text_problem,
    wire_address,
    wire_domain,
)

from mailroom_sender.errors import MessageBuildError

__all__ = ["addr_spec", "ascii_domain", "build_message", "html_to_text", "recipients"]

CRLF = "\r\n"
FOLD_AT = 78  # RFC 5322 §2.1.1: SHOULD; no line is ever over 998 (MUST)
MAX_LINE = 998
_BASE64_CHUNK = 57  # raw bytes per 76-column base64 line
_WORD_PREFIX = "=?utf-8?b?"
_WORD_SUFFIX = "?="
# An encoded word is at most 75 characters (RFC 2047 §2); with the 12 of prefix and suffix,
# 45 bytes of UTF-8 (60 base64 characters) make a 72-character word.
_WORD_BYTES = 45
# Printable ASCII words separated by single spaces, nothing that reads as an encoded word.
_PLAIN_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
# RFC 5322 atoms separated by single spaces: a display name that needs no quoting.
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_QUOTABLE = re.compile(r"[\x20-\x7e]*")


def _check_text(value: str, what: str) -> str:
    problem = text_problem(value, what)
    if problem is not None:
        raise MessageBuildError(problem)
    return value


def ascii_domain(domain: str) -> str:
    """The domain as sent on the wire (IDNA / punycode for internationalised names)."""
    try:
        return wire_domain(domain)
    except ValueError as exc:
        raise MessageBuildError(str(exc)) from exc


def addr_spec(address: Address) -> str:
    """`local@domain` in the form SES takes for the envelope (ASCII local part, punycode domain)."""
    try:
        return wire_address(address.email)
    except ValueError as exc:
        raise MessageBuildError(str(exc)) from exc


def recipients(email: EmailQueued) -> list[str]:
    """Every envelope recipient (to, cc and bcc), de-duplicated, in order."""
    seen: dict[str, None] = {}
    for address in (*email.to, *email.cc, *email.bcc):
        seen.setdefault(addr_spec(address), None)
    return list(seen)


# --------------------------------------------------------------------------- header pieces


def _encoded_words(text: str) -> list[str]:
    """`text` as RFC 2047 base64 words, each at most 75 characters and holding whole characters."""
    words: list[str] = []
    chunk: list[bytes] = []
    size = 0
    for char in text:
        encoded = char.encode("utf-8")
        if size + len(encoded) > _WORD_BYTES:
            words.append(_word(b"".join(chunk)))
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded)
    if chunk or not words:
        words.append(_word(b"".join(chunk)))
    return words


def _word(data: bytes) -> str:
    return _WORD_PREFIX + binascii.b2a_base64(data, newline=False).decode("ascii") + _WORD_SUFFIX


def _is_plain(text: str) -> bool:
    return _PLAIN_TEXT.fullmatch(text) is not None and "=?" not in text


def _text_tokens(text: str) -> list[str]:
    """Unstructured header text as tokens joined by single spaces (or folds)."""
    if not text:
        return []
    if _is_plain(text):
        return text.split(" ")
    return _encoded_words(text)


def _header_spec(address: Address) -> str:
    """The address as written in a header: a local part that is not a dot-atom quoted."""
    spec = addr_spec(address)
    local, _, domain = spec.rpartition("@")
    if _DOT_ATOM.fullmatch(local):
        return spec
    quoted = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}"@{domain}'


def _address_tokens(address: Address, last: bool) -> list[str]:
    spec = _header_spec(address)
    name = _check_text(address.name or "", "display name").strip()
    tokens: list[str]
    if not name:
        tokens = [spec]
    elif _ATOMS.fullmatch(name) and "=?" not in name:
        tokens = [*name.split(" "), f"<{spec}>"]
    elif _QUOTABLE.fullmatch(name) and "=?" not in name and len(name) < FOLD_AT:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        tokens = [f'"{quoted}"', f"<{spec}>"]
    else:
        tokens = [*_encoded_words(name), f"<{spec}>"]
    if not last:
        tokens[-1] += ","
    return tokens


def _address_list(addresses: Iterable[Address]) -> list[str]:
    items = list(addresses)
    tokens: list[str] = []
    for i, address in enumerate(items):
        tokens.extend(_address_tokens(address, last=i == len(items) - 1))
    return tokens


def _header(name: str, tokens: list[str]) -> str:
    """`Name: tokens` with a single space between tokens, folded before a token that would pass
    78 columns (a fold is CRLF + the same space, so unfolding gives back the value)."""
    lines: list[str] = []
    line = name + ":"
    for token in tokens:
        if len(line) + 1 + len(token) > FOLD_AT and line != name + ":":
            lines.append(line)
            line = " " + token
        else:
            line = line + " " + token
    lines.append(line)
    if any(len(part) > MAX_LINE for part in lines):
        # Only plain text with a word this long gets here; encoded words fold anywhere.
        return _header(name, _encoded_words(" ".join(tokens)))
    return CRLF.join(lines) + CRLF


# --------------------------------------------------------------------------- bodies


def _body(text: str) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body ending in CRLF), as the stdlib lays it out."""
    encoding = body_transfer_encoding(text)
    lines = text.encode("utf-8").splitlines()
    if encoding == "7bit":
        return encoding, (b"\r\n".join(lines) + b"\r\n").decode("ascii")
    data = b"\r\n".join(lines) + b"\r\n"
    encoded = "".join(
        binascii.b2a_base64(data[i : i + _BASE64_CHUNK], newline=False).decode("ascii") + CRLF
        for i in range(0, len(data), _BASE64_CHUNK)
    )
    return encoding, encoded


def _part(subtype: str, text: str) -> str:
    encoding, body = _body(text)
    return f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{body}'


def _base64(data: bytes) -> str:
    """`data` as base64 in 76-column CRLF lines (the same bytes `_body` writes 57 bytes at a time)."""
    if not data:
        return ""
    encoded = binascii.b2a_base64(data, newline=False).decode("ascii")
    return "".join(encoded[i : i + 76] + CRLF for i in range(0, len(encoded), 76))


def _attachment_part(attachment: Attachment) -> str:
    for problem in (
        filename_problem(attachment.filename),
        content_type_problem(attachment.content_type),
        content_id_problem(attachment.content_id) if attachment.content_id is not None else None,
    ):
        if problem is not None:
            raise MessageBuildError(f"attachment {attachment.filename!r}: {problem}")
    head = attachment_head(attachment.filename, attachment.content_type, attachment.content_id)
    return head + _base64(attachment.content)


def _calendar_part(ical: str) -> str:
    encoding, body = _body(ical)
    return (
        f'Content-Type: text/calendar; method=REQUEST; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}{body}"
    )


def _multipart(subtype: str, parts: list[str], *, params: str = "") -> str:
    """A multipart entity (its Content-Type header, the blank line, the parts) as a part or a body."""
    boundary = _boundary(parts)
    out = [f'Content-Type: multipart/{subtype};{params}{CRLF} boundary="{boundary}"{CRLF}{CRLF}']
    for part in parts:
        out.append(f"--{boundary}{CRLF}{part}{CRLF}")
    out.append(f"--{boundary}--{CRLF}")
    return "".join(out)


def _body_with_attachments(email: EmailQueued, text: str) -> str:
    """The body entity of an email with attachments or an invite (see the module docstring)."""
    if len(email.attachments) > MAX_ATTACHMENTS:
        raise MessageBuildError(f"at most {MAX_ATTACHMENTS} attachments are allowed")
    if email.ical_event is not None:
        problem = ical_problem(email.ical_event)
        if problem is not None:
            raise MessageBuildError(problem)
    # Inline parts sit next to the html; without html they are ordinary (inline) parts of the mix.
    inline = [a for a in email.attachments if a.content_id] if email.html is not None else []
    attached = [a for a in email.attachments if not (a.content_id and email.html is not None)]
    alternatives = [_part("plain", text)]
    if email.html is not None:
        html = _part("html", email.html)
        if inline:
            html = _multipart("related", [html, *map(_attachment_part, inline)], params=f'{CRLF} type="text/html";')
        alternatives.append(html)
    if email.ical_event is not None:
        alternatives.append(_calendar_part(email.ical_event))
        attached.append(
            Attachment(
                filename=INVITE_FILENAME,
                content=email.ical_event.encode("utf-8"),
                content_type=INVITE_CONTENT_TYPE,
            )
        )
    body = alternatives[0] if len(alternatives) == 1 else _multipart("alternative", alternatives)
    if attached:
        body = _multipart("mixed", [body, *map(_attachment_part, attached)])
    return body


def _boundary(bodies: Iterable[str]) -> str:
    while True:
        boundary = "=_" + secrets.token_hex(16)
        if not any(boundary in body for body in bodies):
            return boundary


# --------------------------------------------------------------------------- broadcast: RFC 8058
# (streams) A broadcast email carries one-click unsubscribe headers. The URL is signed by the API
# and travels in the event; the sender only writes it. The tenant cannot set these two itself.

_LIST_UNSUBSCRIBE_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
# A URI inside `<…>` of List-Unsubscribe (RFC 2369): printable ASCII, no space, `<`, `>` or `,`.
_HEADER_URI = re.compile(r"(?:https://|http://|mailto:)[\x21-\x2b\x2d-\x3b\x3d\x3f-\x7e]{1,900}")


def _list_unsubscribe(email: EmailQueued) -> list[str]:
    """`List-Unsubscribe: <url>[, <mailto>]` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
    on a broadcast email; nothing on a transactional one."""
    if email.stream != "broadcast":
        return []
    if any(name.lower() in _LIST_UNSUBSCRIBE_HEADERS for name in email.headers):
        raise MessageBuildError("List-Unsubscribe headers of a broadcast email are Mailroom's to set")
    uris = [u for u in (email.unsubscribe_url, email.unsubscribe_mailto) if u]
    if not email.unsubscribe_url or not all(_HEADER_URI.fullmatch(u) for u in uris):
        raise MessageBuildError("a broadcast email needs a valid one-click unsubscribe URL")
    tokens = [f"<{uri}>," for uri in uris]
    tokens[-1] = tokens[-1][:-1]
    return [_header("List-Unsubscribe", tokens), f"List-Unsubscribe-Post: List-Unsubscribe=One-Click{CRLF}"]


# --------------------------------------------------------------------------- the message


def build_message(email: EmailQueued, *, now: datetime | None = None) -> bytes:
    """The RFC 5322 message SES sends as-is (`Content.Raw`). Bcc never appears in it."""
    try:
        return _build(email, now or datetime.now(UTC))
    except UnicodeError as exc:  # a lone surrogate cannot be UTF-8
        raise MessageBuildError(f"cannot build message: {exc}") from exc


def _build(email: EmailQueued, now: datetime) -> bytes:
    from_spec = addr_spec(email.from_)
    from_tokens = _address_tokens(email.from_, last=True)
    too_many = custom_headers_problem(len(email.headers))
    if too_many is not None:
        raise MessageBuildError(too_many)
    head = [_header("From", from_tokens)]
    if email.to:
        head.append(_header("To", _address_list(email.to)))
    if email.cc:
        head.append(_header("Cc", _address_list(email.cc)))
    if email.reply_to:
        head.append(_header("Reply-To", _address_list(email.reply_to)))
    head.append(_header("Subject", _text_tokens(_check_text(email.subject, "subject"))))
    head.append(f"Date: {format_datetime(now)}{CRLF}")
    head.append(f"Message-ID: <{email.email_id}@{from_spec.rpartition('@')[2]}>{CRLF}")
    for name, value in email.headers.items():
        # The API refused these with the same rules; this is the last line before SES.
        problem = header_problem(name, value)
        if problem is not None:
            raise MessageBuildError(f"header {name!r}: {problem}")
        head.append(_header(name, _text_tokens(value)))
    head.extend(_list_unsubscribe(email))  # broadcast only (streams, RFC 8058)
    head.append(f"MIME-Version: 1.0{CRLF}")
    text = email.text if email.text is not None else html_to_text(email.html or "")
    if email.attachments or email.ical_event is not None:
        head.append(_body_with_attachments(email, text))
        return "".join(head).encode("ascii")
    if email.html is None:
        head.append(_part("plain", text))
        return "".join(head).encode("ascii")
    parts = [_part("plain", text), _part("html", email.html)]
    boundary = _boundary(parts)
    head.append(f'Content-Type: multipart/alternative;{CRLF} boundary="{boundary}"{CRLF}{CRLF}')
    for part in parts:
        head.append(f"--{boundary}{CRLF}{part}{CRLF}")
    head.append(f"--{boundary}--{CRLF}")
    return "".join(head).encode("ascii")
