"""MIME construction (standard library only) and the html → text fallback.

Custom headers follow `mailroom_contracts.headers`, the same rules the API applied before it
accepted the email; this module is the last line before SES, so it checks them again and refuses
anything that could inject a header or an envelope recipient on its own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address as MimeAddress
from email.message import EmailMessage
from email.utils import format_datetime
from html.parser import HTMLParser

from mailroom_contracts.events import Address, EmailQueued
from mailroom_contracts.headers import header_problem

from mailroom_sender.errors import MessageBuildError

# CRLF line endings and a 7-bit clean message (non-ASCII bodies become quoted-printable/base64).
_POLICY = policy.SMTP.clone(cte_type="7bit")
_FORBIDDEN = ("\r", "\n", "\0")
_LOCAL_PART = re.compile(r"^[^\s<>()\[\]\\,;:@\"]+$")


def _check_text(value: str, what: str) -> str:
    if any(c in value for c in _FORBIDDEN):
        raise MessageBuildError(f"{what} contains a line break or NUL")
    return value


def ascii_domain(domain: str) -> str:
    """The domain as sent on the wire (IDNA / punycode for internationalised names)."""
    if not domain or any(c.isspace() for c in domain) or any(c in domain for c in '<>()[]\\,;:@"'):
        raise MessageBuildError(f"invalid domain {domain!r}")
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise MessageBuildError(f"invalid internationalised domain {domain!r}") from exc


def addr_spec(address: Address) -> str:
    """`local@domain` in the form SES takes for the envelope (ASCII local part, punycode domain)."""
    email = _check_text(address.email.strip(), "address")
    local, sep, domain = email.rpartition("@")
    if not sep or not local or not _LOCAL_PART.match(local):
        raise MessageBuildError(f"invalid address {email!r}")
    if not local.isascii():
        raise MessageBuildError(f"non-ASCII local part is not supported: {email!r}")
    return f"{local}@{ascii_domain(domain)}"


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
        msg.set_content(text, subtype="plain", charset="utf-8")
        if email.html is not None:
            msg.add_alternative(email.html, subtype="html", charset="utf-8")
            for part in msg.iter_parts():  # add_alternative stamps MIME-Version on the new part too
                del part["MIME-Version"]
        return msg.as_bytes()
    except MessageBuildError:
        raise
    except (ValueError, TypeError, IndexError, LookupError) as exc:
        # email.headerregistry raises these for values it cannot parse or fold.
        raise MessageBuildError(f"cannot build message: {exc}") from exc


# --------------------------------------------------------------------------- html → text

_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
_BLOCK = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "aside",
        "nav",
        "table",
        "tr",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "blockquote",
        "pre",
        "form",
        "fieldset",
        "address",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "center",
    }
)
_VOID = frozenset({"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed", "source", "wbr"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._links: list[tuple[str | None, int]] = []  # (href, index in out where the link text starts)

    def _separate(self) -> None:
        if self.out and self.out[-1] and not self.out[-1][-1].isspace():
            self.out.append(" ")

    def _newline(self, count: int = 1) -> None:
        self.out.append("\n" * count)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            if tag not in _VOID:
                self._skip_depth += 1
            return
        if self._skip_depth:
            return
        attributes = dict(attrs)
        if tag in _BLOCK:
            self._newline(2 if tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote") else 1)
        if tag == "pre":
            self._pre_depth += 1
        elif tag == "br":
            self._newline()
        elif tag == "hr":
            self.out.append("\n----------\n")
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in ("td", "th"):
            self.out.append(" ")
        elif tag == "img":
            alt = (attributes.get("alt") or "").strip()
            if alt:
                self._separate()
                self.out.append(alt)
        elif tag == "a":
            self._links.append((attributes.get("href"), len(self.out)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
        if tag in _BLOCK:
            self._newline(2 if tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote") else 1)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            href = (href or "").strip()
            label = " ".join("".join(self.out[start:]).split())
            if href and not href.startswith(("#", "javascript:")):
                shown = href.removeprefix("mailto:")
                if label and label not in (href, shown):
                    self.out.append(f" ({href})")
                elif not label:
                    self.out.append(shown)

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        self.out.append(data if self._pre_depth else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """A readable plain-text version of `html`: scripts and styles dropped, links kept as URLs."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "\n".join(line.strip() for line in "".join(parser.out).split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"
