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
- Attachments (issue 16): a filename is 1..255 characters without line breaks, control
  characters or path separators, and not of a type SES refuses (`DANGEROUS_EXTENSIONS`); a
  content type is a bare `type/subtype` (guessed from the filename when absent,
  `guess_content_type`); a content id is a short printable token. Their part headers are written
  here (`attachment_head`), so the part's size is exact before anything is built
  (`attachment_part_size`). An invite (`ical_event`) is RFC 5545 text (`ical_problem`).
"""

from __future__ import annotations

import functools
import mimetypes
import re
from collections.abc import Iterable
from html import unescape
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


@functools.lru_cache(maxsize=8192)  # issue 15: the same few domains, on every address of every email
def wire_domain(domain: str) -> str:
    """The domain as sent on the wire (lower case; IDNA / punycode for internationalised names).
    Raises ValueError when it cannot be one (never cached)."""
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
    lines = body.encode("utf-8").splitlines()
    raw = sum(map(len, lines)) + 2 * len(lines) or 2
    # body_transfer_encoding(body) == "7bit", on the lines split once (ASCII: the same bytes)
    if body.isascii() and max(map(len, lines), default=0) <= MAX_LINE:
        return raw
    full, rest = divmod(raw, _BASE64_CHUNK)
    return full * (_BASE64_CHUNK // 3 * 4 + 2) + ((rest + 2) // 3 * 4 + 2 if rest else 0)


def message_size(*, header_values: Iterable[str], bodies: Iterable[str], parts: Iterable[int] = ()) -> int:
    """An upper bound, within about 2 KiB, of the built message in bytes: each body part exactly,
    header values (addresses, subject, custom headers) by their worst-case encoded size, and
    `parts` (the exact sizes of attachment parts, `attachment_part_size`) with their boundaries
    and the extra multipart levels they need."""
    headers = sum(len(v.encode("utf-8")) * _HEADER_FACTOR + _HEADER_LINE_BYTES for v in header_values)
    size = _STRUCTURE_BYTES + headers + sum(encoded_body_size(b) for b in bodies)
    attached = [_PART_BOUNDARY_BYTES + p for p in parts]
    if attached:
        size += _EXTRA_LEVELS_BYTES + sum(attached)
    return size


# --------------------------------------------------------------------------- attachments

MAX_ATTACHMENTS: Final = 100
MAX_FILENAME: Final = 255  # characters; most file systems' limit
MAX_CONTENT_ID: Final = 78  # SES v2 Attachment.ContentId
INVITE_FILENAME: Final = "invite.ics"
INVITE_CONTENT_TYPE: Final = "application/ics"  # the attachment; the alternative is text/calendar
DEFAULT_CONTENT_TYPE: Final = "application/octet-stream"
# File types SES refuses to send ("Unsupported attachment types", SES developer guide).
DANGEROUS_EXTENSIONS: Final = frozenset(
    """ade adp app asp bas bat cer chm cmd com cpl crt csh der exe fxp gadget hlp hta inf ins isp its
    js jse ksh lib lnk mad maf mag mam maq mar mas mat mau mav maw mda mdb mde mdt mdw mdz msc msh
    msh1 msh2 mshxml msh1xml msh2xml msi msp mst ops pcd pif plg prf prg reg scf scr sct shb shs sys
    ps1 ps1xml ps2 ps2xml psc1 psc2 tmp url vb vbe vbs vps vsmacros vss vst vsw vxd ws wsc wsf wsh
    xnk""".split()
)
_CONTENT_TYPE_RE: Final = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_CONTENT_ID_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.@-]{1,78}")
_CONTROL_OR_SEPARATOR: Final = re.compile(r"[\x00-\x1f\x7f-\x9f/\\\u2028\u2029]")
_QUOTABLE_PARAM: Final = re.compile(r"[\x20-\x7e]*")
# RFC 2231 attribute-chars: what a percent-encoded parameter value may hold as is.
_ATTR_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$&+-.^_`|~")
_PARAM_SEGMENT: Final = 50  # percent-encoded characters per RFC 2231 continuation (lines stay <= 78)
# `--boundary` CRLF before a part and the CRLF after it (boundaries are "=_" + 32 hex digits).
_PART_BOUNDARY_BYTES: Final = 2 + 34 + 2 + 2
# The multipart/mixed and multipart/related levels and the calendar part's headers that
# attachments or an invite add around the alternative part: a generous bound.
_EXTRA_LEVELS_BYTES: Final = 1024
# The built-in table only (not the host's /etc/mime.types), so every host guesses the same.
_TYPES: Final = mimetypes.MimeTypes(filenames=())
# Common types Python's built-in table (3.11) lacks; consulted first.
_EXTRA_TYPES: Final = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "ics": "text/calendar",
    "vcf": "text/vcard",
    "md": "text/markdown",
    "webp": "image/webp",
    "heic": "image/heic",
    "avif": "image/avif",
    "7z": "application/x-7z-compressed",
    "rar": "application/vnd.rar",
    "epub": "application/epub+zip",
}
_COMPRESSED: Final = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
    "br": "application/x-brotli",
}


def _extension(filename: str) -> str:
    """The lower-case extension as Windows sees it (trailing dots and spaces are dropped)."""
    name = filename.rstrip(" .")
    return name.rpartition(".")[2].lower() if "." in name else ""


def filename_problem(filename: str) -> str | None:
    """Why `filename` cannot name an attachment, or None."""
    if not filename.strip():
        return "filename must not be empty"
    if len(filename) > MAX_FILENAME:
        return f"filename is longer than {MAX_FILENAME} characters"
    if _CONTROL_OR_SEPARATOR.search(filename) or has_break_or_nul(filename):
        return "filename must not contain line breaks, control characters, NUL or path separators (/ \\)"
    if filename.strip(" .") == "":
        return "filename must name a file"
    if filename != filename.strip():
        return "filename must not start or end with whitespace"
    extension = _extension(filename)
    if extension in DANGEROUS_EXTENSIONS:
        return f"SES does not send attachments of type .{extension}"
    return None


def guess_content_type(filename: str) -> str:
    """The content type of a file by its extension (application/octet-stream when unknown)."""
    extension = _extension(filename)
    if not extension:
        return DEFAULT_CONTENT_TYPE
    if extension in _EXTRA_TYPES:
        return _EXTRA_TYPES[extension]
    dotted = "." + extension
    compressed = _TYPES.encodings_map.get(dotted)
    if compressed is not None:
        return _COMPRESSED.get(compressed, DEFAULT_CONTENT_TYPE)
    return _TYPES.types_map[True].get(dotted) or _TYPES.types_map[False].get(dotted) or DEFAULT_CONTENT_TYPE


def content_type_problem(content_type: str) -> str | None:
    """Why `content_type` (lower case) cannot be an attachment's type, or None."""
    if not _CONTENT_TYPE_RE.fullmatch(content_type):
        return "content_type must be a MIME type like application/pdf (no parameters)"
    if content_type.startswith(("multipart/", "message/")):
        return "content_type must not be a multipart/ or message/ type"
    return None


def content_id_problem(content_id: str) -> str | None:
    if not _CONTENT_ID_RE.fullmatch(content_id):
        return (
            f"content_id must be 1 to {MAX_CONTENT_ID} printable ASCII characters"
            " without spaces, quotes, parentheses or angle brackets"
        )
    return None


def ical_problem(ical: str) -> str | None:
    """Why `ical` cannot be sent as a calendar invite, or None."""
    if "\x00" in ical:
        return "ical_event must not contain NUL"
    if not ical.lstrip().upper().startswith("BEGIN:VCALENDAR"):
        return "ical_event must be RFC 5545 text starting with BEGIN:VCALENDAR"
    return None


def _param(name: str, value: str) -> list[str]:
    """`name="value"`, or the RFC 2231 form (UTF-8, percent-encoded, continued over lines of at
    most 78 characters)."""
    quoted = f'{name}="{value}"'
    # Quoted when plain ASCII (nothing a reader could take for an RFC 2047 word) and the folded
    # line (a space, the parameter, `;`) stays within 78 characters.
    plain = _QUOTABLE_PARAM.fullmatch(value) and not any(c in value for c in ('"', "\\", "=?"))
    if len(quoted) <= 76 and plain:
        return [quoted]
    # Segments hold whole characters, so each decodes on its own (some clients decode them apart).
    segments: list[str] = []
    segment = ""
    for char in value:
        piece = "".join(chr(b) if b in _ATTR_CHARS else f"%{b:02X}" for b in char.encode("utf-8"))
        if segment and len(segment) + len(piece) > _PARAM_SEGMENT:
            segments.append(segment)
            segment = ""
        segment += piece
    segments.append(segment)
    if len(segments) == 1:
        return [f"{name}*=utf-8''{segments[0]}"]
    return [f"{name}*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}{seg}" for i, seg in enumerate(segments)]


def _header_with_params(head: str, params: list[str]) -> str:
    return ";\r\n ".join([head, *params]) + "\r\n"


def attachment_head(filename: str, content_type: str, content_id: str | None) -> str:
    """The part headers of an attachment (and the blank line after them), as the sender writes them."""
    disposition = "inline" if content_id else "attachment"
    head = _header_with_params(f"Content-Type: {content_type}", _param("name", filename))
    head += "Content-Transfer-Encoding: base64\r\n"
    head += _header_with_params(f"Content-Disposition: {disposition}", _param("filename", filename))
    if content_id:
        head += f"Content-ID: <{content_id}>\r\n"
    return head + "\r\n"


def base64_body_size(size: int) -> int:
    """Bytes of `size` raw bytes as base64 in 76-column CRLF lines (the stdlib's layout)."""
    full, rest = divmod(size, _BASE64_CHUNK)
    return full * (_BASE64_CHUNK // 3 * 4 + 2) + ((rest + 2) // 3 * 4 + 2 if rest else 0)


def attachment_part_size(filename: str, content_type: str, content_id: str | None, size: int) -> int:
    """The exact size of an attachment's part (headers and base64 body) of `size` raw bytes."""
    return len(attachment_head(filename, content_type, content_id)) + base64_body_size(size)


def attachment_sizes(attachments: Iterable[tuple[str, str, str | None, int]], ical_event: str | None) -> list[int]:
    """The exact part sizes of `attachments` ((filename, content_type, content_id, raw size)) and
    of the invite.ics an `ical_event` adds, for `message_size(parts=...)` (the calendar
    alternative itself is a body: pass the ical text in `bodies`)."""
    sizes = [attachment_part_size(*a) for a in attachments]
    if ical_event is not None:
        sizes.append(attachment_part_size(INVITE_FILENAME, INVITE_CONTENT_TYPE, None, len(ical_event.encode("utf-8"))))
    return sizes


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


# One pass of one regex over the document (what `html.parser.HTMLParser` tokenizes, for what this
# conversion reads of it, at a fifth of the cost): comments, declarations and processing
# instructions are dropped; a tag is `<name attrs>` or `</name attrs>` with quoted attribute values
# that may hold `>`; anything else, a stray `<` included, is text.
_TOKEN = re.compile(
    r"""<!--.*?(?:-->|\Z)"""
    r"""|<[!?][^>]*>?"""
    r"""|<(/?)([a-zA-Z][^\t\n\r\f />\x00]*)((?:[^>"']|"[^"]*"|'[^']*')*)>""",
    re.S,
)
_ATTRIBUTE = re.compile(r"""((?<=['"\s/])[^\s/>][^\s/=>]*)(?:\s*=\s*("[^"]*"|'[^']*'|(?!['"])[^>\s]*))?""")
_SELF_CLOSING = re.compile(r"""(?:^|[\s"'])/\s*$""")
_RAW_TEXT = frozenset({"script", "style"})  # their content is not markup: skipped to the end tag
_PARAGRAPH_LIKE = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote"})


def _collapse(data: str) -> str:
    """`re.sub(r"\\s+", " ", data)` (str.split() and re's \\s know the same whitespace), faster."""
    words = data.split()
    if not words:
        return " "
    core = " ".join(words)
    if data[0].isspace():
        core = " " + core
    if data[-1].isspace():
        core += " "
    return core


def _attributes(text: str) -> dict[str, str]:
    """Attribute names (lower case) → unescaped values; the last of a repeated name wins."""
    found: dict[str, str] = {}
    for name, value in _ATTRIBUTE.findall(" " + text):
        if value[:1] in ("'", '"'):
            value = value[1:-1]
        found[name.lower()] = unescape(value)
    return found


class _Text:
    """The text being built while the tokens go by."""

    def __init__(self) -> None:
        self.out: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.links: list[tuple[str | None, int]] = []  # (href, index in out where the link text starts)

    def start(self, tag: str, attrs: str) -> None:
        out = self.out
        if tag in _SKIP:
            if tag not in _VOID:
                self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag in _BLOCK:
            out.append("\n\n" if tag in _PARAGRAPH_LIKE else "\n")
        if tag == "pre":
            self.pre_depth += 1
        elif tag == "br":
            out.append("\n")
        elif tag == "hr":
            out.append("\n----------\n")
        elif tag == "li":
            out.append("\n- ")
        elif tag in ("td", "th"):
            out.append(" ")
        elif tag == "img":
            alt = (_attributes(attrs).get("alt") or "").strip()
            if alt:
                if out and out[-1] and not out[-1][-1].isspace():
                    out.append(" ")
                out.append(alt)
        elif tag == "a":
            self.links.append((_attributes(attrs).get("href"), len(out)))

    def end(self, tag: str) -> None:
        out = self.out
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag in _BLOCK:
            out.append("\n\n" if tag in _PARAGRAPH_LIKE else "\n")
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            href = (href or "").strip()
            label = " ".join("".join(out[start:]).split())
            if href and not href.startswith(("#", "javascript:")):
                shown = href.removeprefix("mailto:")
                if label and label not in (href, shown):
                    out.append(f" ({href})")
                elif not label:
                    out.append(shown)


def html_to_text(html: str) -> str:
    """A readable plain-text version of `html`: scripts and styles dropped, links kept as URLs."""
    # issue 15: on the accept path of every html-only email; the loop keeps its lookups local and
    # skips the calls that would do nothing (unescape without "&", the self-closing check without "/").
    text = _Text()
    out, start, end, search = text.out, text.start, text.end, _TOKEN.search
    pos, n = 0, len(html)
    while pos < n:
        m = search(html, pos)
        data = html[pos:] if m is None else html[pos : m.start()]
        if data and not text.skip_depth:
            if "&" in data:
                data = unescape(data)
            out.append(data if text.pre_depth else _collapse(data))
        if m is None:
            break
        pos = m.end()
        closing, name, attrs = m.groups()
        if name is None:  # a comment, declaration or processing instruction
            continue
        tag = name.lower()
        if closing:
            end(tag)
            continue
        start(tag, attrs)
        if "/" in attrs and _SELF_CLOSING.search(attrs):
            if tag not in _VOID:
                end(tag)
        elif tag in _RAW_TEXT:
            close = re.compile(rf"</{tag}(?=[\s/>])", re.I).search(html, pos)
            if close is None:
                if text.skip_depth:
                    text.skip_depth -= 1
                break
            pos = close.start()
    joined = "\n".join([line.strip() for line in "".join(out).split("\n")])
    # `re.sub(r"\n{3,}", "\n\n", ...)`, at a third of its cost: each pass turns every three line
    # ends of a run into two, so a run of three or more ends as two (a few passes for any run).
    while "\n\n\n" in joined:
        joined = joined.replace("\n\n\n", "\n\n")
    return joined.strip() + "\n"


def generated_text_size_bound(html: str) -> int:
    """At least `encoded_body_size(html_to_text(html))`, without converting (issue 15: the accept
    checks the message size with it and leaves the conversion to the sender). The text is at most
    3 UTF-8 bytes per byte of html plus its final line end (an `<hr>`'s 4 bytes give 12; tested);
    CRLF line ends at most double that, and base64 is the dearer encoding."""
    return base64_body_size(2 * (3 * len(html.encode("utf-8")) + 1) + 2)
