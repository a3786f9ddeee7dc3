"""Large email content kept out of the event stream (issue 16).

An `EmailQueued` whose JSON would be over `OFFLOAD_THRESHOLD_BYTES` (the API's setting) carries a
`ContentRef` instead of its html, text, attachments and invite. The content is then ONE object in
the JetStream Object Store bucket `CONTENT_BUCKET`: the msgpack encoding of `EmailContent`, named
by the email id, with the SHA-256 the reference holds. The API writes it before the accept
statement commits; the sender reads it, checks the SHA-256, builds the MIME, and deletes it once the
email is settled (sent or failed).

Life of an object: an object whose accept statement did not commit (refused, crashed) is deleted
by the API at once, best effort; whatever is left (a crash between put and commit, a canceled
scheduled email, a delete that failed) expires with the bucket's `max_age_seconds`, longer than any
email may wait for the sender (scheduled up to 30 days ahead, then retries).
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from mailroom_contracts.events import Attachment


class EmailContent(msgspec.Struct, frozen=True, kw_only=True):
    """The part of an EmailQueued that is moved to the object store."""

    html: str | None = None
    text: str | None = None
    attachments: list[Attachment] = []
    ical_event: str | None = None


class ObjectStoreSpec(msgspec.Struct, frozen=True, kw_only=True):
    bucket: str
    description: str
    max_age_seconds: float


CONTENT_BUCKET: Final = ObjectStoreSpec(
    bucket="mailroom-content",
    description="Content of queued emails too large for the event (html, text, attachments)",
    # Scheduled emails wait up to 30 days; then the sender's retries. Orphans expire at this age.
    max_age_seconds=40 * 24 * 3600,
)
OBJECT_STORES: Final[tuple[ObjectStoreSpec, ...]] = (CONTENT_BUCKET,)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(EmailContent)


def encode_content(content: EmailContent) -> bytes:
    return _encoder.encode(content)


def decode_content(data: bytes) -> EmailContent:
    """Raises msgspec.DecodeError / ValidationError for bytes that are not an EmailContent."""
    return _decoder.decode(data)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
