"""What an email may contain so that the sender can build it and SES send it, shared by the API
(which refuses with 422/413 before it accepts) and the sender (the last check before SES): one
implementation, so the two ends never disagree. Pure functions (standard library only); no I/O.

- Text that becomes a header (subject, display names, header values) holds no line boundary of
  any kind (`str.splitlines()`'s: CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029) and no NUL.
- An address is `local@domain` with an ASCII local part (SES has no SMTPUTF8 for the envelope)
  of at most 64 characters (RFC 5321 §4.5.3.1.1) and a domain that IDNA-encodes.
- Tags are 1..256 ASCII letters, digits, `_` and `-`, matched whole (never `$`, which lets a
  final newline through).
- At most `MAX_CUSTOM_HEADERS` custom headers.
- Body parts are 7bit when ASCII with lines of at most 78 characters, else base64
  (`body_transfer_encoding`), so the built size is known exactly before building
  (`message_size`), without building a 10 MiB message on the request path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Final, Literal

MAX_LOCAL_PART: Final = 64
MAX_CUSTOM_HEADERS: Final = 50  # far more than any real use; bounds the header block and its checks
MAX_TAG_LENGTH: Final = 256  # SES message tag names and values
TAG_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")  # use with fullmatch
TAG_PATTERN: Final = r"^[A-Za-z0-9_-]{1,256}$"  # the same rule for OpenAPI (JSON Schema has no fullmatch)
LOCAL_PART_RE: Final = re.compile(r"[^\s<>()\[\]\\,;:@\"]+")  # use with fullmatch
_DOMAIN_SPECIALS: Final = frozenset('<>()[]\\,;:@"')
# Every boundary str.splitlines() knows, plus NUL (which Postgres and SMTP refuse).
_BREAK_OR_NUL: Final = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029\x00]")

# Body encoding, as the sender's policy (email.policy.SMTP, 7-bit clean) lays it out.
MAX_LINE: Final = 78
_BASE64_CHUNK: Final = MAX_LINE // 4 * 3  # raw bytes per base64 line (the stdlib's rule): 57
# Headers, MIME boundaries and part headers of a multipart/alternative message without the header
# values counted below: the real figure is ~600 bytes; this is a generous bound.
_STRUCTURE_BYTES: Final = 2048
# A header value's encoded size is at most this many times its UTF-8 size, plus folding per line
# (RFC 2047 base64 words are 4/3 of the bytes plus `=?utf-8?b?...?=` every 45 bytes).
_HEADER_FACTOR: Final = 2
_HEADER_LINE_BYTES: Final = 100


def has_break_or_nul(value: str) -> bool:
    """True when `value` holds any line boundary or NUL: anything that could end a header line."""
    return _BREAK_OR_NUL.search(value) is not None


def text_problem(value: str, what: str) -> str | None:
    """Why `value` cannot go into a header as `what` (subject, display name), or None."""
    if has_break_or_nul(value):
        return f"{what} must not contain line breaks (CR, LF, VT, FF, U+2028, ...) or NUL"
    return None


def wire_domain(domain: str) -> str:
    """The domain as sent on the wire (lower case; IDNA / punycode for internationalised names).
    Raises ValueError when it cannot be one."""
    if not domain or any(c.isspace() for c in domain) or any(c in _DOMAIN_SPECIALS for c in domain):
        raise ValueError(f"invalid domain {domain!r}")
    if has_break_or_nul(domain):
        raise ValueError(f"invalid domain {domain!r}")
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"invalid internationalised domain {domain!r}") from exc


def wire_address(email: str) -> str:
    """`local@domain` as SES takes it for the envelope. Raises ValueError with the reason."""
    email = email.strip()
    if has_break_or_nul(email):
        raise ValueError("addresses must not contain line breaks or NUL")
    local, sep, domain = email.rpartition("@")
    if not sep or not local or not LOCAL_PART_RE.fullmatch(local):
        raise ValueError(f"invalid address {email!r}")
    if not local.isascii():
        raise ValueError(f"non-ASCII local part is not supported (SES has no SMTPUTF8): {email!r}")
    if len(local) > MAX_LOCAL_PART:
        raise ValueError(f"the local part is longer than {MAX_LOCAL_PART} characters")
    return f"{local}@{wire_domain(domain)}"


def address_problem(email: str) -> str | None:
    """Why the bare address `email` cannot be sent, or None."""
    try:
        wire_address(email)
    except ValueError as exc:
        return str(exc)
    return None


def tag_problem(key: str, value: object) -> str | None:
    """Why the tag `key: value` is refused (reserved prefixes are `mailroom_contracts.ses`'s), or None."""
    if not TAG_RE.fullmatch(key):
        return f"tag names are 1 to {MAX_TAG_LENGTH} ASCII letters, digits, '_' and '-'"
    if not isinstance(value, str) or not TAG_RE.fullmatch(value):
        return f"tag values are strings of 1 to {MAX_TAG_LENGTH} ASCII letters, digits, '_' and '-'"
    return None


def custom_headers_problem(count: int) -> str | None:
    if count > MAX_CUSTOM_HEADERS:
        return f"at most {MAX_CUSTOM_HEADERS} custom headers are allowed"
    return None


def body_transfer_encoding(body: str) -> Literal["7bit", "base64"]:
    """The Content-Transfer-Encoding the sender gives a text/plain or text/html part."""
    if body.isascii() and all(len(line) <= MAX_LINE for line in body.encode("ascii").splitlines()):
        return "7bit"
    return "base64"


def encoded_body_size(body: str) -> int:
    """Bytes of the part's encoded body as built (CRLF line ends), without the part's headers."""
    # The stdlib joins the lines with CRLF and ends with one (an empty body is one line end).
    raw = sum(len(line) + 2 for line in body.encode("utf-8").splitlines()) or 2
    if body_transfer_encoding(body) == "7bit":
        return raw
    full, rest = divmod(raw, _BASE64_CHUNK)
    return full * (_BASE64_CHUNK // 3 * 4 + 2) + ((rest + 2) // 3 * 4 + 2 if rest else 0)


def message_size(*, header_values: Iterable[str], bodies: Iterable[str]) -> int:
    """An upper bound, within about 2 KiB, of the built message in bytes: each body part exactly,
    header values (addresses, subject, custom headers) by their worst-case encoded size."""
    headers = sum(len(v.encode("utf-8")) * _HEADER_FACTOR + _HEADER_LINE_BYTES for v in header_values)
    return _STRUCTURE_BYTES + headers + sum(encoded_body_size(b) for b in bodies)


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
