"""Offloaded email content (issue 16, `mailroom_contracts.content`): an EmailQueued with a
`content` reference has its html, text, attachments and invite in the JetStream Object Store.

`load` fetches the object, checks its size and SHA-256 against the reference and decodes it into
the full EmailQueued. A missing object (never written, expired, deleted) → `ContentMissing`; one
whose bytes differ from what the API wrote → `ContentCorrupt`: both are `MessageBuildError`s, so
the email fails with EmailFailed (reason `content_missing` / `content_corrupt`) and nothing is ever
sent from bytes that are not the accepted ones. A store that does not answer → `ContentUnavailable`
(the message is retried). `discard` deletes the object once the email is settled (best effort; the
bucket's max age removes what is left)."""

from __future__ import annotations

import asyncio
import io

import msgspec
from mailroom_contracts.content import decode_content, sha256_hex
from mailroom_contracts.events import ContentRef, EmailQueued
from mailroom_kit.logging import get_logger
from mailroom_kit.redact import describe_error
from nats.js import JetStreamContext
from nats.js.errors import DigestMismatchError, NotFoundError

from mailroom_sender.errors import MessageBuildError, SenderError

log = get_logger(__name__)


class ContentMissing(MessageBuildError):
    reason = "content_missing"


class ContentCorrupt(MessageBuildError):
    reason = "content_corrupt"


class ContentUnavailable(SenderError):
    """The object store did not answer: retry later."""


class ContentLoader:
    def __init__(self, js: JetStreamContext, *, timeout_seconds: float = 60.0) -> None:
        self._js = js
        self._timeout = timeout_seconds

    async def fetch(self, ref: ContentRef) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                store = await self._js.object_store(ref.bucket)
                sink = io.BytesIO()
                await store.get(ref.name, writeinto=sink)
        except NotFoundError:
            raise ContentMissing(f"the content object {ref.bucket}/{ref.name} does not exist") from None
        except DigestMismatchError:
            raise ContentCorrupt(f"the content object {ref.bucket}/{ref.name} fails its own digest") from None
        except Exception as exc:  # timeouts, no responders, connection lost, JetStream 503
            raise ContentUnavailable(f"the content store is unavailable: {type(exc).__name__}") from exc
        return sink.getvalue()

    async def load(self, email: EmailQueued) -> EmailQueued:
        """`email` with its content put back (it must have a `content` reference)."""
        ref = email.content
        assert ref is not None
        data = await self.fetch(ref)
        if len(data) != ref.size or sha256_hex(data) != ref.sha256:
            raise ContentCorrupt(
                f"the content object {ref.bucket}/{ref.name} is not the one accepted"
                f" ({len(data)} bytes, SHA-256 mismatch or size {ref.size} expected)"
            )
        try:
            content = decode_content(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ContentCorrupt(f"the content object {ref.bucket}/{ref.name} cannot be decoded") from exc
        return msgspec.structs.replace(
            email,
            html=content.html,
            text=content.text,
            attachments=content.attachments,
            ical_event=content.ical_event,
        )

    async def discard(self, ref: ContentRef) -> None:
        try:
            async with asyncio.timeout(5):
                await (await self._js.object_store(ref.bucket)).delete(ref.name)
        except NotFoundError:
            pass  # deleted already (a redelivery of a settled email)
        except Exception as exc:
            log.warning("content.discard_failed", email_id=ref.name, **describe_error(exc))
