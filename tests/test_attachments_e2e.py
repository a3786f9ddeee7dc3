"""Attachments through the whole stack (issue 16), on one stack with a 30 MiB message limit:

- an email with a file, an inline `cid:` image and a calendar invite reaches the SES emulator as MIME
  the standard library parses back to exactly those parts;
- a 25 MiB email is accepted, its content offloaded to the JetStream Object Store (never in the
  event), fetched and checked by the sender, and delivered byte for byte: the attachment's SHA-256
  is the same at the emulator, whose own SHA-256 of the raw message matches the raw it recorded."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest
from mailroom_contracts import decode_event
from mailroom_contracts.content import CONTENT_BUCKET
from mailroom_contracts.events import EmailQueued
from mailroom_contracts.streams import EMAIL_STREAM
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, email_status, make_stack, verified_domain, wait_for

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    yield from make_stack(
        tmp_path_factory.mktemp("large"),
        postgres,
        api={
            "MAILROOM_API_MAX_MESSAGE_BYTES": str(30 * MIB),
            # base64 in JSON is 4/3 of the bytes: room for a 30 MiB message
            "MAILROOM_API_MAX_BODY_BYTES": str(41 * MIB),
        },
    )


@pytest.fixture(scope="module")
def tenant(big_stack: Stack) -> Tenant:
    tenant = create_tenant(big_stack)
    verified_domain(big_stack, tenant, "big.example.test")
    return tenant


def sent_message(stack: Stack, email_id: str) -> dict[str, Any]:
    sent = httpx.get(stack.url("emulator") + "/_emulator/sent", timeout=60).json()["messages"]
    [message] = [m for m in sent if m["tags"].get("mailroom_email_id") == email_id]
    return message  # type: ignore[no-any-return]


ICAL = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Acme//EN\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n"
    "UID:kickoff@big.example.test\r\nDTSTAMP:20260101T090000Z\r\nDTSTART:20260105T140000Z\r\n"
    "SUMMARY:Kick-off\r\nORGANIZER:mailto:pm@big.example.test\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def test_attachments_inline_image_and_invite_arrive_as_parseable_mime(big_stack: Stack, tenant: Tenant) -> None:
    pdf = b"%PDF-1.4\n" + os.urandom(3000)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
    body = {
        "from": "PM <pm@big.example.test>",
        "to": "success@simulator.amazonses.com",
        "subject": "Kick-off",
        "html": '<p><img src="cid:logo" alt="Acme"> See you there.</p>',
        "attachments": [
            {"filename": "Agenda – März.pdf", "content": base64.b64encode(pdf).decode()},
            {"filename": "logo.png", "content": base64.b64encode(png).decode(), "content_id": "logo"},
        ],
        "ical_event": ICAL,
    }
    with httpx.Client(base_url=big_stack.url("api"), headers=tenant.headers(), timeout=30) as client:
        resp = client.post("/v1/emails", json=body)
        assert resp.status_code == 202, resp.text
        email_id = resp.json()["id"]
        wait_for(lambda: email_status(client, email_id)["status"] == "delivered", 30, what=f"{email_id} delivered")
        stored = client.get(f"/v1/emails/{email_id}?include=content").json()

    raw = sent_message(big_stack, email_id)["raw"].encode("ascii")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/mixed" and msg["To"] == "success@simulator.amazonses.com"
    kinds = [(p.get_content_type(), p.get_filename(), p["Content-ID"]) for p in msg.walk()]
    assert kinds == [
        ("multipart/mixed", None, None),
        ("multipart/alternative", None, None),
        ("text/plain", None, None),
        ("multipart/related", None, None),
        ("text/html", None, None),
        ("image/png", "logo.png", "<logo>"),
        ("text/calendar", None, None),
        ("application/pdf", "Agenda – März.pdf", None),
        ("application/ics", "invite.ics", None),
    ]
    parts = {p.get_filename(): p for p in msg.walk() if p.get_filename()}
    assert parts["Agenda – März.pdf"].get_payload(decode=True) == pdf
    assert parts["logo.png"].get_payload(decode=True) == png
    assert parts["logo.png"].get_content_disposition() == "inline"
    calendar = next(p for p in msg.walk() if p.get_content_type() == "text/calendar")
    assert calendar.get_param("method") == "REQUEST" and "SUMMARY:Kick-off" in calendar.get_content()
    text = next(p for p in msg.walk() if p.get_content_type() == "text/plain")
    assert text.get_content().replace("\r\n", "\n") == stored["text"]  # the stored text is what was sent
    assert [a["filename"] for a in stored["attachments"]] == ["Agenda – März.pdf", "logo.png", "invite.ics"]


async def queued_event(stack: Stack, email_id: str) -> EmailQueued:
    nc = await nats.connect(stack.nats.url)  # type: ignore[union-attr]
    try:
        js = nc.jetstream()
        sub = await js.subscribe("mailroom.email.queued", stream=EMAIL_STREAM.name, ordered_consumer=True)
        while True:
            msg = await sub.next_msg(timeout=10)
            event = decode_event(msg.data)
            if isinstance(event, EmailQueued) and event.email_id == email_id:
                assert len(msg.data) < 64 * 1024  # the event carries a reference, not the content
                return event
    finally:
        await nc.close()


async def bucket_names(stack: Stack) -> set[str]:
    nc = await nats.connect(stack.nats.url)  # type: ignore[union-attr]
    try:
        store = await nc.jetstream().object_store(CONTENT_BUCKET.bucket)
        try:
            return {info.name for info in await store.list(ignore_deletes=True)}
        except nats.js.errors.NotFoundError:
            return set()
    finally:
        await nc.close()


def test_a_25_mib_email_is_offloaded_checked_and_delivered_intact(big_stack: Stack, tenant: Tenant) -> None:
    stack = big_stack
    data = os.urandom(19 * MIB)  # 25.3 MiB once base64 in the message
    digest = hashlib.sha256(data).hexdigest()
    body = {
        "from": "Archive <archive@big.example.test>",
        "to": "success@simulator.amazonses.com",
        "subject": "Your export",
        "html": "<p>Your export is attached.</p>",
        "attachments": [{"filename": "export.bin", "content": base64.b64encode(data).decode()}],
    }
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=60) as client:
        resp = client.post("/v1/emails", json=body)
        assert resp.status_code == 202, resp.text
        email_id = resp.json()["id"]

        event = asyncio.run(queued_event(stack, email_id))
        assert event.content is not None and event.content.size > 19 * MIB
        assert event.attachments == [] and event.html is None

        wait_for(lambda: email_status(client, email_id)["status"] == "delivered", 60, what=f"{email_id} delivered")
        listed = client.get(f"/v1/emails/{email_id}?include=content").json()["attachments"]
        assert listed == [
            {
                "filename": "export.bin",
                "size": len(data),
                "content_type": "application/octet-stream",
                "content_id": None,
            }
        ]

    message = sent_message(stack, email_id)
    raw = message["raw"].encode("ascii")
    assert (message["size"], message["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert 25 * MIB < len(raw) < 30 * MIB
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    [part] = [p for p in parsed.walk() if p.get_filename() == "export.bin"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes) and hashlib.sha256(payload).hexdigest() == digest
    # Settled: the sender deleted the object.
    assert email_id not in asyncio.run(bucket_names(stack))
