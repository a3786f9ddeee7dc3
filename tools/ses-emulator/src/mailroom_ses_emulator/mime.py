"""MIME helpers: read the headers SES reports, and build a message from ``Content.Simple``."""

from __future__ import annotations

import base64
import binascii
import email.policy
import email.utils
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from .errors import bad_request

# SES includes at most this many bytes of headers in the event's "headers" list.
HEADERS_LIMIT = 10 * 1024


@dataclass
class ParsedMessage:
    headers: list[tuple[str, str]]  # (name, unfolded raw value), in message order
    headers_truncated: bool

    def get(self, name: str) -> str | None:
        lname = name.lower()
        for n, v in self.headers:
            if n.lower() == lname:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for n, v in self.headers if n.lower() == lname]


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


def parse_raw(raw: bytes) -> ParsedMessage:
    msg: Message = BytesParser(policy=email.policy.compat32).parsebytes(raw, headersonly=True)
    headers: list[tuple[str, str]] = []
    size = 0
    truncated = False
    for name, value in msg.items():
        v = _unfold(str(value))
        size += len(name) + len(v) + 4
        if size > HEADERS_LIMIT:
            truncated = True
            break
        headers.append((name, v))
    if not headers and not raw.strip():
        raise bad_request("Empty raw message.")
    return ParsedMessage(headers, truncated)


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words (``=?utf-8?...?=``) into text; keep the input on failure."""
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def split_addresses(values: list[str]) -> list[str]:
    """Header values -> one string per address, display names kept (``Name <a@b>``), decoded."""
    out: list[str] = []
    for name, addr in email.utils.getaddresses([decode_words(v) for v in values]):
        if not addr:
            continue
        out.append(email.utils.formataddr((name, addr)) if name else addr)
    return out


def bare_addresses(values: list[str]) -> list[str]:
    """Header values / SES address fields -> bare addresses (``a@b``)."""
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


def bare_address(value: str) -> str:
    return email.utils.parseaddr(value)[1]


def build_simple(
    from_address: str,
    to: list[str],
    cc: list[str],
    reply_to: list[str],
    simple: dict[str, Any],
) -> bytes:
    """Build the MIME message SES would send for ``Content.Simple``."""
    subject = (simple.get("Subject") or {}).get("Data")
    body = simple.get("Body") or {}
    if subject is None:
        raise bad_request("Subject is required.")
    text = (body.get("Text") or {}).get("Data")
    html = (body.get("Html") or {}).get("Data")
    if text is None and html is None:
        raise bad_request("Body must contain Text or Html.")
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = from_address
    if reply_to:
        msg["Reply-To"] = ", ".join(reply_to)
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["MIME-Version"] = "1.0"
    for header in simple.get("Headers") or []:
        msg[str(header["Name"])] = str(header["Value"])
    if text is not None and html is not None:
        msg.set_content(text)
        msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    else:
        msg.set_content(text or "")
    for att in simple.get("Attachments") or []:
        try:
            content = base64.b64decode(att["RawContent"])
        except (binascii.Error, KeyError, TypeError):
            raise bad_request("Invalid attachment content.") from None
        maintype, _, subtype = (att.get("ContentType") or "application/octet-stream").partition("/")
        disposition = "inline" if att.get("ContentDisposition") == "INLINE" else "attachment"
        msg.add_attachment(
            content,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=att.get("FileName"),
            disposition=disposition,
            cid=att.get("ContentId"),
        )
    return msg.as_bytes()
