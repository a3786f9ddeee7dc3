"""Attachments, inline images, calendar invites and offloaded content (issue 16), through the real
SES emulator (and a real nats-server for the object store): the MIME that reached the emulator is
parsed back with the standard library; a tampered, missing or unreachable content object never
gives a corrupt send."""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path

import msgspec
import nats
import pytest
from mailroom_contracts.content import CONTENT_BUCKET, EmailContent, encode_content, sha256_hex
from mailroom_contracts.events import Attachment, ContentRef, EmailFailed, EmailQueued, EmailSent
from mailroom_contracts.message import attachment_sizes, message_size
from mailroom_devstack.infra import NatsServer
from mailroom_kit.consumer import Retry
from mailroom_kit.db import Pool
from mailroom_kit.jetstream import ensure_object_store
from mailroom_sender.content import ContentLoader
from mailroom_sender.handlers import SenderHandlers
from mailroom_sender.mime import build_message
from mailroom_sender.providers import SesProvider
from mailroom_ses_emulator import EmulatorServer
from nats.aio.client import Client
from nats.js.object_store import ObjectStore

from .conftest import delivery_row, make_service, outbox_events, queued, redelivered, sent_messages

ICAL = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Acme//Calendar//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
    "UID:meeting-123@mail.acme.test\r\nDTSTAMP:20250127T120000Z\r\nDTSTART:20250128T140000Z\r\n"
    "DTEND:20250128T150000Z\r\nSUMMARY:Team Meeting\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 300


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage) and not msg.defects
    return msg


def rich_email(**kw: object) -> EmailQueued:
    fields: dict[str, object] = {
        "html": '<p>Hello <img src="cid:logo@acme" alt="Acme"></p>',
        "text": None,
        "attachments": [
            Attachment(filename="Rechnung März €.pdf", content=PDF, content_type="application/pdf"),
            Attachment(filename="logo.png", content=PNG, content_type="image/png", content_id="logo@acme"),
            Attachment(filename="empty.txt", content=b"", content_type="text/plain"),
        ],
        "ical_event": ICAL,
    }
    fields.update(kw)
    return queued(**fields)


def predicted_size(ev: EmailQueued, text: str) -> int:
    addresses = [ev.from_.email, ev.from_.name or "", *(a.email for a in ev.to)]
    bodies = [b for b in (text, ev.html, ev.ical_event) if b is not None]
    parts = attachment_sizes(
        ((a.filename, a.content_type, a.content_id, len(a.content)) for a in ev.attachments), ev.ical_event
    )
    return message_size(header_values=[*addresses, ev.subject], bodies=bodies, parts=parts)


async def test_attachments_inline_image_and_invite_reach_ses_as_parseable_mime(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer
) -> None:
    ev = rich_email()
    await handlers.email_queued(ev)
    [sent] = sent_messages(emulator, ev.email_id)
    raw = sent["raw"].encode("ascii")
    assert (sent["size"], sent["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    msg = parse(raw)

    assert msg.get_content_type() == "multipart/mixed"
    body, pdf, empty, invite = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    plain, related, calendar = body.iter_parts()
    assert plain.get_content_type() == "text/plain" and "Hello Acme" in plain.get_content()
    assert related.get_content_type() == "multipart/related" and related.get_param("type") == "text/html"
    html, logo = related.iter_parts()
    assert html.get_content_type() == "text/html" and "cid:logo@acme" in html.get_content()
    assert (logo.get_content_type(), logo["Content-ID"], logo.get_content_disposition()) == (
        "image/png",
        "<logo@acme>",
        "inline",
    )
    assert logo.get_content() == PNG and logo.get_filename() == "logo.png"
    assert calendar.get_content_type() == "text/calendar" and calendar.get_param("method") == "REQUEST"
    assert calendar.get_content().splitlines() == ICAL.splitlines()

    # RFC 2231 for the non-ASCII name, decoded back exactly.
    assert (pdf.get_filename(), pdf.get_content_type(), pdf.get_content_disposition()) == (
        "Rechnung März €.pdf",
        "application/pdf",
        "attachment",
    )
    assert pdf.get_content() == PDF and pdf["Content-Transfer-Encoding"] == "base64"
    assert empty.get_filename() == "empty.txt" and empty.get_payload(decode=True) == b""
    assert (invite.get_filename(), invite.get_content_type()) == ("invite.ics", "application/ics")
    assert invite.get_content() == ICAL.encode()

    # The size the API predicts is an upper bound within a couple of KiB of the real message.
    text = plain.get_content()
    predicted = predicted_size(ev, text)
    assert predicted - 4096 <= len(raw) <= predicted
    [sent_event] = [e for e in await outbox_events(pool, ev.email_id) if isinstance(e, EmailSent)]
    assert sent_event.provider == "ses"


def test_layouts_without_html_or_invite() -> None:
    only_text = parse(build_message(rich_email(html=None, text="see attached", ical_event=None)))
    assert only_text.get_content_type() == "multipart/mixed"
    parts = list(only_text.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/pdf", "image/png", "text/plain"]
    assert parts[2].get_content_disposition() == "inline"  # no html to relate it to: inline in the mix

    invite_only = parse(build_message(queued(html=None, text="join us", ical_event=ICAL)))
    body, invite = invite_only.iter_parts()
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/calendar"]
    assert invite.get_filename() == "invite.ics"

    inline_only = parse(build_message(rich_email(attachments=[rich_email().attachments[1]], ical_event=None)))
    assert inline_only.get_content_type() == "multipart/alternative"  # nothing to mix in


@pytest.mark.parametrize(
    ("attachment", "ical"),
    [
        (Attachment(filename="setup.exe", content=b"MZ"), None),
        (Attachment(filename="../etc/passwd", content=b"x"), None),
        (Attachment(filename="a\r\nX-Evil: 1", content=b"x"), None),
        (Attachment(filename="a.pdf", content=b"x", content_type="multipart/mixed"), None),
        (Attachment(filename="a.pdf", content=b"x", content_type="text/plain\r\nX-Evil: 1"), None),
        (Attachment(filename="a.png", content=b"x", content_id="<x>"), None),
        (None, "not a calendar"),
    ],
)
async def test_the_sender_refuses_what_the_api_would_have(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer, attachment: Attachment | None, ical: str | None
) -> None:
    ev = queued(attachments=[attachment] if attachment else [], ical_event=ical)
    await handlers.email_queued(ev)
    assert sent_messages(emulator, ev.email_id) == []
    [failed] = [e for e in await outbox_events(pool, ev.email_id) if isinstance(e, EmailFailed)]
    assert failed.reason == "invalid_message"


# --------------------------------------------------------------------------- offloaded content


@pytest.fixture(scope="module")
def content_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("content-nats")).start()
    yield server
    server.stop()


@pytest.fixture
async def nc(content_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(content_nats.url)
    yield client
    await client.close()


@pytest.fixture
async def bucket(nc: Client) -> ObjectStore:
    return await ensure_object_store(nc.jetstream(), CONTENT_BUCKET)


async def offloaded(bucket: ObjectStore, ev: EmailQueued, *, stored: bytes | None = None) -> EmailQueued:
    """`ev` as the API publishes it when its content is too large: a reference to an object.
    `stored` replaces the bytes put in the store (a tampered object); b"" puts nothing."""
    data = encode_content(
        EmailContent(html=ev.html, text=ev.text, attachments=ev.attachments, ical_event=ev.ical_event)
    )
    if stored != b"":
        await bucket.put(ev.email_id, data if stored is None else stored)
    ref = ContentRef(bucket=CONTENT_BUCKET.bucket, name=ev.email_id, sha256=sha256_hex(data), size=len(data))
    return msgspec.structs.replace(ev, html=None, text=None, attachments=[], ical_event=None, content=ref)


async def object_exists(bucket: ObjectStore, name: str) -> bool:
    try:
        await bucket.get_info(name)
    except nats.js.errors.NotFoundError:
        return False
    return True


async def test_offloaded_content_is_fetched_checked_sent_then_deleted(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, nc: Client, bucket: ObjectStore
) -> None:
    handlers = SenderHandlers(pool, make_service(ses_provider), ContentLoader(nc.jetstream()))
    full = rich_email()
    ev = await offloaded(bucket, full)
    await handlers.email_queued(ev)
    [sent] = sent_messages(emulator, ev.email_id)
    msg = parse(sent["raw"].encode("ascii"))
    pdf = next(p for p in msg.walk() if p.get_content_type() == "application/pdf")
    assert pdf.get_content() == PDF
    assert not await object_exists(bucket, ev.email_id)  # settled: the object is gone

    # A redelivery of the settled email needs no object (and no store: this one is unreachable).
    offline = SenderHandlers(pool, make_service(ses_provider), ContentLoader(nc.jetstream(), timeout_seconds=0.01))
    await offline.email_queued(redelivered(ev))
    assert len(sent_messages(emulator, ev.email_id)) == 1
    assert (await delivery_row(pool, ev.email_id) or {})["state"] == "sent"


@pytest.mark.parametrize(
    ("stored", "reason"),
    [(b"tampered bytes of another message", "content_corrupt"), (b"", "content_missing")],
)
async def test_a_tampered_or_missing_object_fails_the_email_and_sends_nothing(
    pool: Pool,
    ses_provider: SesProvider,
    emulator: EmulatorServer,
    nc: Client,
    bucket: ObjectStore,
    stored: bytes,
    reason: str,
) -> None:
    handlers = SenderHandlers(pool, make_service(ses_provider), ContentLoader(nc.jetstream()))
    ev = await offloaded(bucket, rich_email(), stored=stored)
    await handlers.email_queued(ev)
    assert sent_messages(emulator, ev.email_id) == []
    [failed] = [e for e in await outbox_events(pool, ev.email_id) if isinstance(e, EmailFailed)]
    assert failed.reason == reason
    assert (await delivery_row(pool, ev.email_id) or {})["state"] == "failed"


async def test_a_tampered_object_of_the_same_size_is_caught_by_its_sha256(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, nc: Client, bucket: ObjectStore
) -> None:
    handlers = SenderHandlers(pool, make_service(ses_provider), ContentLoader(nc.jetstream()))
    good = rich_email()
    data = encode_content(EmailContent(html=good.html, attachments=good.attachments, ical_event=good.ical_event))
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0x01  # one bit inside the pdf's bytes
    ev = await offloaded(bucket, good, stored=bytes(flipped))
    await handlers.email_queued(ev)
    assert sent_messages(emulator, ev.email_id) == []
    [failed] = [e for e in await outbox_events(pool, ev.email_id) if isinstance(e, EmailFailed)]
    assert failed.reason == "content_corrupt"


async def test_an_unreachable_store_retries_and_sends_nothing(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, tmp_path: Path
) -> None:
    server = NatsServer(tmp_path / "nats").start()
    client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        bucket = await ensure_object_store(client.jetstream(), CONTENT_BUCKET)
        ev = await offloaded(bucket, rich_email())
        server.stop()
        handlers = SenderHandlers(
            pool, make_service(ses_provider), ContentLoader(client.jetstream(), timeout_seconds=1)
        )
        with pytest.raises(Retry):
            await handlers.email_queued(ev)
        assert sent_messages(emulator, ev.email_id) == []
        assert await delivery_row(pool, ev.email_id) is None  # nothing decided: the email waits
    finally:
        with contextlib.suppress(Exception):  # its server is gone
            await client.close()
