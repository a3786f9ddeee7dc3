"""Attachments, invites, the message size and offloaded content at the accept path (issue 16):
each bad field is a 422 naming it, an oversized message a 413, and neither writes anything (no
row, no outbox row, no object); stored content lists the attachments; a large email's content goes
to the JetStream Object Store and the event carries its reference."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from api_testkit import Tenant, assert_error, bearer, make_tenant, serve, table_counts, unique_domain
from mailroom_api.app import create_app
from mailroom_contracts import decode
from mailroom_contracts.content import CONTENT_BUCKET, decode_content, sha256_hex
from mailroom_contracts.events import EmailQueued
from mailroom_contracts.message import html_to_text
from mailroom_kit.jetstream import ensure_object_store
from mailroom_kit.runtime import Runtime
from nats.js.errors import NotFoundError

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8
ICAL = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:1@x\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
HTML = '<h1>Invoice</h1><p>Thanks, <a href="https://acme.test/i/1">see it online</a>.<img src="cid:logo"></p>'


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"from": "Acme <billing@anything.test>", "to": "ada@example.test", "subject": "Invoice"}
    body.update(kw)
    return body


def pdf(**kw: Any) -> dict[str, Any]:
    return {"filename": "invoice.pdf", "content": b64(PDF), **kw}


@pytest.fixture(scope="module")
async def tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime)


async def written(rt: Runtime) -> tuple[int, ...]:
    return await table_counts(rt, "emails", "email_recipients", "outbox")


async def queued_event(rt: Runtime, email_id: str) -> EmailQueued:
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox WHERE convert_from(payload, 'UTF8')::jsonb ->> 'email_id' = %s", (email_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    return decode(bytes(row["payload"]), EmailQueued)


async def test_attachments_are_accepted_stored_as_a_list_and_carried_by_the_event(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant
) -> None:
    logo = b"\x89PNG\r\n\x1a\n" + b"\x01" * 100
    body = send(
        html=HTML,
        attachments=[
            pdf(),
            {"filename": "logo.PNG", "content": b64(logo), "content_id": "logo"},
            {
                "filename": "data.bin",
                "content": "\n".join([b64(b"x" * 60)[:40], b64(b"x" * 60)[40:]]),
            },  # MIME-style lines
            {"filename": "notes.csv", "content": b64(b"a,b\n"), "content_type": "Text/CSV"},
        ],
        ical_event=ICAL,
    )
    resp = await client.post("/v1/emails", json=body, headers=bearer(tenant.test))
    assert resp.status_code == 202, resp.text
    email_id = resp.json()["id"]

    got = (await client.get(f"/v1/emails/{email_id}?include=content", headers=bearer(tenant.test))).json()
    assert got["text"] == html_to_text(HTML)  # as the sender generates it from the html: what is sent
    assert got["attachments"] == [
        {"filename": "invoice.pdf", "size": len(PDF), "content_type": "application/pdf", "content_id": None},
        {"filename": "logo.PNG", "size": len(logo), "content_type": "image/png", "content_id": "logo"},
        {"filename": "data.bin", "size": 60, "content_type": "application/octet-stream", "content_id": None},
        {"filename": "notes.csv", "size": 4, "content_type": "text/csv", "content_id": None},
        {"filename": "invite.ics", "size": len(ICAL), "content_type": "application/ics", "content_id": None},
    ]
    assert all("content" not in a for a in got["attachments"])  # sizes and names, never the bytes
    plain = (await client.get(f"/v1/emails/{email_id}", headers=bearer(tenant.test))).json()
    assert "attachments" not in plain and "html" not in plain

    event = await queued_event(runtime, email_id)
    assert event.content is None  # small: the content rides in the event
    assert [a.content for a in event.attachments] == [PDF, logo, b"x" * 60, b"a,b\n"]
    assert event.attachments[1].content_id == "logo" and event.ical_event == ICAL
    assert event.text is None  # the sender generates it (issue 15: not on the accept path)


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("bad base64", send(text="t", attachments=[pdf(content="not base64!")]), "attachments[0].content"),
    ("bad padding", send(text="t", attachments=[pdf(), pdf(content="QUI")]), "attachments[1].content"),
    ("padding inside", send(text="t", attachments=[pdf(content="QU=I")]), "attachments[0].content"),
    ("url-safe alphabet", send(text="t", attachments=[pdf(content="-_-_")]), "attachments[0].content"),
    ("non-ascii base64", send(text="t", attachments=[pdf(content="QUJDé")]), "attachments[0].content"),
    ("no content", send(text="t", attachments=[{"filename": "a.pdf"}]), "attachments[0].content"),
    ("empty filename", send(text="t", attachments=[pdf(filename="")]), "attachments[0].filename"),
    ("blank filename", send(text="t", attachments=[pdf(filename="  ")]), "attachments[0].filename"),
    ("path", send(text="t", attachments=[pdf(filename="../a.pdf")]), "attachments[0].filename"),
    ("windows path", send(text="t", attachments=[pdf(filename="c:\\a.pdf")]), "attachments[0].filename"),
    ("crlf", send(text="t", attachments=[pdf(filename="a.pdf\r\nX-A: 1")]), "attachments[0].filename"),
    ("u2028", send(text="t", attachments=[pdf(filename="a\u2028.pdf")]), "attachments[0].filename"),
    ("nul", send(text="t", attachments=[pdf(filename="a\x00.pdf")]), "attachments[0].filename"),
    ("control", send(text="t", attachments=[pdf(filename="a\x07.pdf")]), "attachments[0].filename"),
    ("too long", send(text="t", attachments=[pdf(filename="a" * 252 + ".pdf")]), "attachments[0].filename"),
    ("exe", send(text="t", attachments=[pdf(filename="setup.exe")]), "attachments[0].filename"),
    ("upper-case js", send(text="t", attachments=[pdf(), pdf(filename="run.JS")]), "attachments[1].filename"),
    ("trailing dot", send(text="t", attachments=[pdf(filename="evil.bat.")]), "attachments[0].filename"),
    ("double ext", send(text="t", attachments=[pdf(filename="invoice.pdf.vbs")]), "attachments[0].filename"),
    ("bad type", send(text="t", attachments=[pdf(content_type="pdf")]), "attachments[0].content_type"),
    ("type params", send(text="t", attachments=[pdf(content_type="text/plain; a=b")]), "attachments[0].content_type"),
    ("multipart", send(text="t", attachments=[pdf(content_type="multipart/mixed")]), "attachments[0].content_type"),
    ("cid brackets", send(html="h", attachments=[pdf(content_id="<logo>")]), "attachments[0].content_id"),
    ("cid space", send(html="h", attachments=[pdf(content_id="a b")]), "attachments[0].content_id"),
    (
        "cid twice",
        send(html="h", attachments=[pdf(content_id="x"), pdf(content_id="x")]),
        "attachments[1].content_id",
    ),
    ("cid too long", send(html="h", attachments=[pdf(content_id="x" * 79)]), "attachments[0].content_id"),
    ("unknown field", send(text="t", attachments=[pdf(encoding="base64")]), "attachments[0].encoding"),
    ("not an object", send(text="t", attachments=["a.pdf"]), "attachments[0]"),
    ("too many", send(text="t", attachments=[pdf()] * 101), "attachments"),
    ("ical not a calendar", send(text="t", ical_event="hello"), "ical_event"),
    ("ical nul", send(text="t", ical_event="BEGIN:VCALENDAR\x00"), "ical_event"),
    ("ical not a string", send(text="t", ical_event=5), "ical_event"),
]


@pytest.mark.parametrize(("case", "body", "param"), BAD, ids=[c[0] for c in BAD])
async def test_bad_attachments_are_422_naming_the_field_and_write_nothing(
    client: httpx.AsyncClient, runtime: Runtime, tenant: Tenant, case: str, body: dict[str, Any], param: str
) -> None:
    before = await written(runtime)
    resp = await client.post("/v1/emails", json=body, headers=bearer(tenant.test))
    assert_error(resp, 422, "validation_error", param)
    assert await written(runtime) == before


@pytest.fixture(scope="module")
async def small_limits(runtime: Runtime) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The real app with a 50 kB message limit and content offloaded above 1 KiB of event."""
    settings = msgspec.structs.replace(runtime.settings, max_message_bytes=50_000, offload_threshold_bytes=1024)
    small = dataclasses.replace(runtime, settings=settings)
    async with serve(create_app(small)) as c:
        yield c, small


async def test_a_message_over_the_limit_once_encoded_is_413_and_writes_nothing(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant
) -> None:
    client, _ = small_limits
    before = await written(runtime)
    # 37.5 kB of bytes are 50 kB of base64 lines: over, though the raw bytes are under the limit.
    over = send(text="t", attachments=[pdf(content=b64(b"\x00" * 37_500))])
    resp = await client.post("/v1/emails", json=over, headers=bearer(tenant.test))
    assert_error(resp, 413, "payload_too_large", None)
    assert await written(runtime) == before
    fits = send(text="t", attachments=[pdf(content=b64(b"\x00" * 30_000))])
    assert (await client.post("/v1/emails", json=fits, headers=bearer(tenant.test))).status_code == 202


async def object_bytes(rt: Runtime, name: str) -> bytes | None:
    store = await rt.js.object_store(CONTENT_BUCKET.bucket)
    try:
        return (await store.get(name)).data
    except NotFoundError:
        return None


async def test_large_content_goes_to_the_object_store_and_the_event_carries_its_reference(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant
) -> None:
    client, _ = small_limits
    resp = await client.post(
        "/v1/emails", json=send(html=HTML, attachments=[pdf()], ical_event=ICAL), headers=bearer(tenant.test)
    )
    assert resp.status_code == 202, resp.text
    email_id = resp.json()["id"]
    event = await queued_event(runtime, email_id)
    ref = event.content
    assert ref is not None and (ref.bucket, ref.name) == (CONTENT_BUCKET.bucket, email_id)
    assert (event.html, event.text, event.attachments, event.ical_event) == (None, None, [], None)
    assert event.subject == "Invoice" and event.to[0].email == "ada@example.test"  # the rest stays
    stored = await object_bytes(runtime, email_id)
    assert stored is not None and (len(stored), sha256_hex(stored)) == (ref.size, ref.sha256)
    content = decode_content(stored)
    assert content.html == HTML and content.text is None and content.ical_event == ICAL
    assert [a.content for a in content.attachments] == [PDF]

    small = await client.post("/v1/emails", json=send(text="hi"), headers=bearer(tenant.test))
    assert (await queued_event(runtime, small.json()["id"])).content is None  # a small send stays in the event
    assert await object_bytes(runtime, small.json()["id"]) is None


async def test_an_offloaded_email_that_is_refused_leaves_no_object(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant
) -> None:
    client, _ = small_limits
    before = await written(runtime)
    objects_before = await live_objects(runtime)
    body = send(attachments=[pdf()], text="t", **{"from": f"billing@{unique_domain()}"})  # not verified
    resp = await client.post("/v1/emails", json=body, headers=bearer(tenant.live))
    assert_error(resp, 403, "domain_not_verified", None)
    assert await written(runtime) == before
    assert await live_objects(runtime) == objects_before  # put, then deleted when the statement refused it


async def live_objects(rt: Runtime) -> int:
    store = await rt.js.object_store(CONTENT_BUCKET.bucket)
    try:
        return len(await store.list(ignore_deletes=True))
    except NotFoundError:  # nats-py: "no objects"
        return 0


async def test_an_unavailable_store_is_503_and_nothing_is_accepted(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant
) -> None:
    client, _ = small_limits
    await runtime.js.delete_object_store(CONTENT_BUCKET.bucket)
    try:
        before = await written(runtime)
        resp = await client.post("/v1/emails", json=send(text="t", attachments=[pdf()]), headers=bearer(tenant.test))
        assert_error(resp, 503, "unavailable", None)
        assert resp.headers["retry-after"] == "5"
        assert await written(runtime) == before
        # A small send never touches the store: it still goes through.
        ok = await client.post("/v1/emails", json=send(text="t"), headers=bearer(tenant.test))
        assert ok.status_code == 202
    finally:
        await ensure_object_store(runtime.js, CONTENT_BUCKET)


async def test_an_accept_statement_that_fails_after_the_put_leaves_no_object(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The object is written before the statement; a statement that errors (here: a real Postgres
    error raised by the real connection) must not leave it behind."""
    from mailroom_api.emails import repository

    async def broken_accept(conn: Any, *_: Any, **__: Any) -> Any:
        await conn.execute("DO $$ BEGIN RAISE EXCEPTION 'accept failed'; END $$")

    client, _ = small_limits
    before, objects_before = await written(runtime), await live_objects(runtime)
    monkeypatch.setattr(repository, "accept_email", broken_accept)
    monkeypatch.setattr(repository, "accept_grouped", broken_accept)  # a plain send's statement (issue 15)
    resp = await client.post("/v1/emails", json=send(text="t", attachments=[pdf()]), headers=bearer(tenant.test))
    assert_error(resp, 500, "internal", None)
    assert await written(runtime) == before
    assert await live_objects(runtime) == objects_before


async def test_batch_items_are_offloaded_and_refused_items_leave_no_object(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant
) -> None:
    """A batch's large items go to the store like single sends; an item refused for its from-domain
    has its object deleted again, an accepted one keeps it."""
    client, _ = small_limits
    objects_before = await live_objects(runtime)
    refused = send(attachments=[pdf()], text="t", **{"from": f"billing@{unique_domain()}"})  # not verified
    resp = await client.post(
        "/v1/emails/batch", json={"emails": [send(attachments=[pdf()], text="t"), refused]}, headers=bearer(tenant.live)
    )
    assert resp.status_code == 200, resp.text
    first, second = resp.json()["data"]
    assert second["error"] == "domain_not_verified"
    # the live key has no verified domain either: both refused, both objects gone
    assert first["error"] == "domain_not_verified"
    assert await live_objects(runtime) == objects_before

    resp = await client.post(
        "/v1/emails/batch",
        json={"emails": [send(attachments=[pdf()], text="t"), send(text="small")]},
        headers=bearer(tenant.test),
    )
    big, small = resp.json()["data"]
    event = await queued_event(runtime, big["id"])
    assert event.content is not None and await object_bytes(runtime, big["id"]) is not None
    assert (await queued_event(runtime, small["id"])).content is None
    assert await live_objects(runtime) == objects_before + 1


async def test_a_replayed_large_send_leaves_no_second_object(
    small_limits: tuple[httpx.AsyncClient, Runtime], runtime: Runtime, tenant: Tenant
) -> None:
    client, _ = small_limits
    headers = {**bearer(tenant.test), "Idempotency-Key": f"big-{unique_domain()}"}
    body = send(attachments=[pdf()], text="t")
    first = await client.post("/v1/emails", json=body, headers=headers)
    objects = await live_objects(runtime)
    again = await client.post("/v1/emails", json=body, headers=headers)
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
    assert await live_objects(runtime) == objects  # the replay's own object was deleted
    assert await object_bytes(runtime, first.json()["id"]) is not None
