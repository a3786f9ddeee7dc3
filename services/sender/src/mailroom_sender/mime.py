"""MIME construction (standard library only).

What a message may contain is `mailroom_contracts.message` and `mailroom_contracts.headers`: the
same rules the API applied before it accepted the email (so nothing it accepts fails here). This
module is the last line before SES, so it checks them again and refuses anything that could inject
a header or an envelope recipient on its own. The html → text fallback and the body encoding are
the contracts' too, so the API knows the built size before it accepts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage
from email.utils import format_datetime

from mailroom_contracts.events import Address, EmailQueued
from mailroom_contracts.headers import header_problem
from mailroom_contracts.message import (
    body_transfer_encoding,
    custom_headers_problem,
    html_to_text,
    text_problem,
    wire_address,
    wire_domain,
)

from mailroom_sender.errors import MessageBuildError

__all__ = ["addr_spec", "ascii_domain", "build_message", "html_to_text", "recipients"]

# CRLF line endings and a 7-bit clean message (non-ASCII bodies become base64).
_POLICY = policy.SMTP.clone(cte_type="7bit")


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


def _mime_address(address: Address) -> MimeAddress:
    local, _, domain = addr_spec(address).rpartition("@")
    name = _check_text(address.name or "", "display name").strip()
    return MimeAddress(display_name=name, username=local, domain=domain)


def recipients(email: EmailQueued) -> list[str]:
    """Every envelope recipient (to, cc and bcc), de-duplicated, in order."""
    seen: dict[str, None] = {}
    for address in (*email.to, *email.cc, *email.bcc):
        seen.setdefault(addr_spec(address), None)
    return list(seen)


def build_message(email: EmailQueued, *, now: datetime | None = None) -> bytes:
    """The RFC 5322 message SES sends as-is (`Content.Raw`). Bcc never appears in it."""
    msg = EmailMessage(policy=_POLICY)
    sender = _mime_address(email.from_)
    too_many = custom_headers_problem(len(email.headers))
    if too_many is not None:
        raise MessageBuildError(too_many)
    try:
        msg["From"] = sender
        if email.to:
            msg["To"] = tuple(_mime_address(a) for a in email.to)
        if email.cc:
            msg["Cc"] = tuple(_mime_address(a) for a in email.cc)
        if email.reply_to:
            msg["Reply-To"] = tuple(_mime_address(a) for a in email.reply_to)
        msg["Subject"] = _check_text(email.subject, "subject")
        msg["Date"] = format_datetime(now or datetime.now(UTC))
        msg["Message-ID"] = f"<{email.email_id}@{sender.domain}>"
        for name, value in email.headers.items():
            # The API refused these with the same rules; this is the last line before SES.
            problem = header_problem(name, value)
            if problem is not None:
                raise MessageBuildError(f"header {name!r}: {problem}")
            msg[name] = value
        text = email.text if email.text is not None else html_to_text(email.html or "")
        # The encoding is the contracts' choice, so the API's size check matches what is built here.
        msg.set_content(text, subtype="plain", charset="utf-8", cte=body_transfer_encoding(text))
        if email.html is not None:
            msg.add_alternative(email.html, subtype="html", charset="utf-8", cte=body_transfer_encoding(email.html))
            for part in msg.iter_parts():  # add_alternative stamps MIME-Version on the new part too
                del part["MIME-Version"]
        return msg.as_bytes()
    except MessageBuildError:
        raise
    except (ValueError, TypeError, IndexError, LookupError) as exc:
        # email.headerregistry raises these for values it cannot parse or fold.
        raise MessageBuildError(f"cannot build message: {exc}") from exc
