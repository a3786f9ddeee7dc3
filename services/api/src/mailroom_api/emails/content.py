"""Large email content goes to the JetStream Object Store, not into the event (issue 16).

When an EmailQueued's encoding is over `MAILROOM_API_OFFLOAD_THRESHOLD_BYTES`, `offload` (called by
`service.offload_large`) puts the content (html, text, attachments, invite:
`mailroom_contracts.content.EmailContent`, msgpack) in the bucket as one object named by the email
id, and returns an event that carries a `ContentRef` (bucket, name, SHA-256, size) instead. A small
send touches nothing here but one length comparison.

The object is written BEFORE the accept statement runs, so an event can never name an object that
does not exist. When the statement then refuses the email (or answers a replay instead), `discard`
deletes the object at once, best effort; an object left behind anyway (a crash in between, a failed
statement that may have committed, a failed delete) expires with
the bucket's max age (`CONTENT_BUCKET.max_age_seconds`, 40 days). The sender deletes the object once
the email is settled.
"""

from __future__ import annotations

import asyncio

import msgspec
from mailroom_contracts import encode
from mailroom_contracts.content import CONTENT_BUCKET, EmailContent, encode_content, sha256_hex
from mailroom_contracts.events import ContentRef, EmailQueued
from mailroom_kit.logging import get_logger
from mailroom_kit.redact import describe_error
from nats.js import JetStreamContext

from mailroom_api.errors import unavailable

log = get_logger(__name__)

# Longest the accept path waits for the object store (a 25 MiB object takes well under a second
# on a healthy server); then the request is 503 and nothing was accepted.
PUT_TIMEOUT_SECONDS = 30.0


class ContentStore:
    """The API's handle on the content bucket; made only for an email that needs it."""

    def __init__(self, js: JetStreamContext, bucket: str = CONTENT_BUCKET.bucket) -> None:
        self._js = js
        self._bucket = bucket

    async def put(self, name: str, data: bytes) -> ContentRef:
        try:
            async with asyncio.timeout(PUT_TIMEOUT_SECONDS):
                store = await self._js.object_store(self._bucket)
                await store.put(name, data)
        except Exception as exc:
            log.warning("content.offload_failed", email_id=name, size=len(data), **describe_error(exc))
            raise unavailable("the message store is unavailable; try again") from None
        return ContentRef(bucket=self._bucket, name=name, sha256=sha256_hex(data), size=len(data))

    async def discard(self, ref: ContentRef) -> None:
        """Delete an object no accepted email refers to (best effort: it expires anyway)."""
        try:
            async with asyncio.timeout(5):
                await (await self._js.object_store(ref.bucket)).delete(ref.name)
        except Exception as exc:
            log.warning("content.discard_failed", email_id=ref.name, **describe_error(exc))


async def offload(queued: EmailQueued, *, js: JetStreamContext) -> tuple[EmailQueued, bytes, ContentRef]:
    """Put the content of `queued` in the store: (the event to publish instead, its encoding, the
    object written). Raises 503 `unavailable` when the store cannot take it."""
    content = EmailContent(
        html=queued.html, text=queued.text, attachments=queued.attachments, ical_event=queued.ical_event
    )
    ref = await ContentStore(js).put(queued.email_id, encode_content(content))
    light = msgspec.structs.replace(queued, html=None, text=None, attachments=[], ical_event=None, content=ref)
    return light, encode(light), ref


async def discard(js: JetStreamContext, ref: ContentRef | None) -> None:
    if ref is not None:
        await ContentStore(js).discard(ref)
