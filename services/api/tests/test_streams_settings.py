"""Streams, tracking, one-click unsubscribe and the default sender, through the real app over real
HTTP (the unsubscribe links over real HTTPS: the app served with TLS at its public URL), real
Postgres and the EmailQueued events the accept statement wrote to the outbox."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from api_testkit import (
    Tenant,
    _Server,
    add_domain,
    assert_error,
    bearer,
    make_tenant,
    serve,
    snapshot,
    table_counts,
    unique_domain,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mailroom_api.app import create_app
from mailroom_api.domains import service as domains
from mailroom_api.unsubscribe.tokens import Unsubscriber, sign
from mailroom_contracts import decode, decode_event
from mailroom_contracts.events import EmailQueued, EmailUnsubscribed
from mailroom_contracts.subjects import EMAIL_UNSUBSCRIBED
from mailroom_devstack.infra import free_port
from mailroom_kit.runtime import Runtime
from mailroom_kit.server import server_config

SECRET = "s" * 40


# --------------------------------------------------------------------------- helpers


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the https public URL of the test's API)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@contextlib.asynccontextmanager
async def serve_https(rt: Runtime, tmp: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with the broadcast stream configured, served over TLS at its public URL."""
    port = free_port()
    settings = msgspec.structs.replace(
        rt.settings,
        unsubscribe_secret=SECRET,
        public_url=f"https://127.0.0.1:{port}",
        unsubscribe_mailto="unsubscribe@mailroom.test",
    )
    cert, key = _certificate(tmp)
    app = create_app(dataclasses.replace(rt, settings=settings))
    config = server_config(
        app, service="api", host="127.0.0.1", port=port, ssl_certfile=str(cert), ssl_keyfile=str(key)
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    verify = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpx.AsyncClient(base_url=settings.public_url, verify=verify, timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def queued_event(rt: Runtime, email_id: str) -> EmailQueued:
    """The EmailQueued the accept statement put in the outbox (no relay runs in this module)."""
    async with rt.pool.connection() as conn:
        cur = await conn.execute("SELECT payload FROM outbox WHERE subject = 'mailroom.email.queued' ORDER BY id DESC")
        for row in await cur.fetchall():
            event = decode_event(bytes(row["payload"]))
            if isinstance(event, EmailQueued) and event.email_id == email_id:
                return event
    raise AssertionError(f"no EmailQueued for {email_id}")


async def suppressions(rt: Runtime, tenant_id: str) -> list[dict[str, Any]]:
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT mode, email, reason, source_email_id FROM suppressions WHERE tenant_id = %s ORDER BY email",
            (tenant_id,),
        )
        return list(await cur.fetchall())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def set_tracking(rt: Runtime, tenant_id: str, name: str, domain_id: str, opens: bool, clicks: bool) -> None:
    """A newer snapshot of the domain with these tracking settings, as its projector would write it."""
    snap = snapshot(tenant_id, name, domain_id=domain_id, last_checked_at=dt.datetime.now(dt.UTC))
    snap = msgspec.structs.replace(snap, track_opens=opens, track_clicks=clicks)
    async with rt.pool.connection() as conn, conn.transaction():
        await domains.record_domain(conn, snap, event_at=None)


def body(sender: str | None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"to": "ada@example.test", "subject": "News", "html": "<p>Hello</p>", **extra}
    if sender is not None:
        out["from"] = sender
    return out


async def send(client: httpx.AsyncClient, token: str, payload: dict[str, Any]) -> str:
    resp = await client.post("/v1/emails", json=payload, headers=bearer(token))
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


@dataclasses.dataclass
class World:
    tenant: Tenant
    domain: str
    domain_id: str


@pytest.fixture(scope="module")
async def world(runtime: Runtime) -> World:
    tenant = await make_tenant(runtime)
    domain = unique_domain()
    domain_id = await add_domain(runtime, tenant.id, domain)
    return World(tenant, domain, domain_id)


@pytest.fixture(scope="module")
async def https(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_https(runtime, tmp_path_factory.mktemp("tls")) as client:
        yield client


# --------------------------------------------------------------------------- streams and tracking


async def test_stream_and_tracking_reach_the_event(world: World, runtime: Runtime, https: httpx.AsyncClient) -> None:
    sender = f"News <news@{world.domain}>"
    plain = await queued_event(runtime, await send(https, world.tenant.live, body(sender)))
    assert (plain.stream, plain.track_opens, plain.track_clicks) == ("transactional", False, False)
    assert plain.unsubscribe_url is None and plain.unsubscribe_mailto is None
    tracked = await queued_event(
        runtime, await send(https, world.tenant.live, body(sender, track_opens=True, track_clicks=True))
    )
    assert (tracked.stream, tracked.track_opens, tracked.track_clicks) == ("transactional", True, True)
    bulk = await queued_event(
        runtime, await send(https, world.tenant.live, body(sender, stream="broadcast", track_clicks=True))
    )
    assert (bulk.stream, bulk.track_opens, bulk.track_clicks) == ("broadcast", False, True)
    assert bulk.unsubscribe_url is not None and bulk.unsubscribe_url.startswith(f"{https.base_url}/v1/unsubscribe/v1.")
    assert bulk.unsubscribe_mailto is not None
    assert bulk.unsubscribe_mailto.startswith("mailto:unsubscribe@mailroom.test?subject=unsubscribe%20v1.")


async def test_tracking_defaults_come_from_the_domain_and_follow_its_changes(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime)
    name = unique_domain()
    domain_id = await add_domain(runtime, tenant.id, name)
    first = await queued_event(runtime, await send(client, tenant.live, body(f"a@{name}")))
    assert (first.track_opens, first.track_clicks) == (False, False)  # and the key is cached now
    await set_tracking(runtime, tenant.id, name, domain_id, opens=True, clicks=False)

    async def defaults_seen() -> bool:  # the domain's change is NOTIFYed to every API process
        event = await queued_event(runtime, await send(client, tenant.live, body(f"a@{name}")))
        return (event.track_opens, event.track_clicks) == (True, False)

    await eventually(defaults_seen)
    # The request's own choice wins over the domain's, either way.
    explicit = await queued_event(
        runtime, await send(client, tenant.live, body(f"a@{name}", track_opens=False, track_clicks=True))
    )
    assert (explicit.track_opens, explicit.track_clicks) == (False, True)
    # Test keys follow the same defaults (the domain is the tenant's, not the mode's).
    test_mode = await queued_event(runtime, await send(client, tenant.test, body(f"a@{name}")))
    assert (test_mode.mode, test_mode.track_opens) == ("test", True)


async def _nothing_written(rt: Runtime, before: tuple[int, ...]) -> None:
    assert await table_counts(rt, "emails", "email_recipients", "outbox", "suppressions") == before


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"to": ["a@example.test", "b@example.test"]}, "to"),
        ({"cc": ["c@example.test"]}, "cc"),
        ({"bcc": ["c@example.test"]}, "bcc"),
        ({"headers": {"List-Unsubscribe": "<https://evil.test/u>"}}, "headers.List-Unsubscribe"),
        ({"headers": {"list-unsubscribe-post": "List-Unsubscribe=One-Click"}}, "headers.list-unsubscribe-post"),
    ],
)
async def test_broadcast_refusals(
    extra: dict[str, Any], param: str, world: World, runtime: Runtime, https: httpx.AsyncClient
) -> None:
    before = await table_counts(runtime, "emails", "email_recipients", "outbox", "suppressions")
    resp = await https.post(
        "/v1/emails", json=body(f"n@{world.domain}", stream="broadcast", **extra), headers=bearer(world.tenant.live)
    )
    assert_error(resp, 422, "validation_error", param)
    await _nothing_written(runtime, before)


async def test_a_tenants_own_list_unsubscribe_stays_allowed_on_transactional(
    world: World, runtime: Runtime, https: httpx.AsyncClient
) -> None:
    headers = {"List-Unsubscribe": "<https://acme.test/u/1>"}
    event = await queued_event(
        runtime, await send(https, world.tenant.live, body(f"n@{world.domain}", headers=headers))
    )
    assert event.headers == headers and event.unsubscribe_url is None


async def test_broadcast_is_refused_when_the_server_has_no_unsubscribe_secret(
    world: World, runtime: Runtime, client: httpx.AsyncClient
) -> None:
    before = await table_counts(runtime, "emails", "email_recipients", "outbox", "suppressions")
    resp = await client.post(
        "/v1/emails", json=body(f"n@{world.domain}", stream="broadcast"), headers=bearer(world.tenant.live)
    )
    assert_error(resp, 422, "validation_error", "stream")
    assert "MAILROOM_API_UNSUBSCRIBE_SECRET" in resp.json()["message"]
    await _nothing_written(runtime, before)


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "marketing"), ("stream", None), ("track_opens", "yes"), ("track_clicks", 1), ("track_opens", None)],
)
async def test_bad_stream_or_tracking_names_the_field(
    field: str, value: Any, world: World, runtime: Runtime, https: httpx.AsyncClient
) -> None:
    if value is None and field.startswith("track"):
        # null is "use the domain's default", the same as leaving it out
        await send(https, world.tenant.live, body(f"n@{world.domain}", **{field: value}))
        return
    before = await table_counts(runtime, "emails", "email_recipients", "outbox", "suppressions")
    resp = await https.post(
        "/v1/emails", json=body(f"n@{world.domain}", **{field: value}), headers=bearer(world.tenant.live)
    )
    assert_error(resp, 422, "validation_error", field)
    await _nothing_written(runtime, before)


# --------------------------------------------------------------------------- one-click unsubscribe


async def _broadcast_url(rt: Runtime, client: httpx.AsyncClient, token: str, sender: str, to: str) -> tuple[str, str]:
    email_id = await send(client, token, body(sender, to=f"Ada <{to}>", stream="broadcast"))
    event = await queued_event(rt, email_id)
    assert event.unsubscribe_url is not None
    return email_id, event.unsubscribe_url


async def test_one_click_post_records_the_suppression_once(
    world: World, runtime: Runtime, https: httpx.AsyncClient
) -> None:
    email_id, url = await _broadcast_url(runtime, https, world.tenant.live, f"n@{world.domain}", "Ada.One@Example.test")
    # What a mailbox provider sends (RFC 8058 §3.1): a POST with the one-click body, no credentials.
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    resp = await https.post(url, content=b"List-Unsubscribe=One-Click", headers=form)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.headers["cache-control"] == "no-store" and resp.headers["referrer-policy"] == "no-referrer"
    expected = [{"mode": "live", "email": "ada.one@example.test", "reason": "unsubscribe", "source_email_id": email_id}]
    assert await suppressions(runtime, world.tenant.id) == expected
    again = await https.post(url, content=b"List-Unsubscribe=One-Click", headers=form)
    assert again.status_code == 200
    assert await suppressions(runtime, world.tenant.id) == expected
    # One EmailUnsubscribed, in the transaction of the new entry; the second click adds none.
    [unsubscribed] = await unsubscribed_events(runtime, email_id)
    assert (unsubscribed.tenant_id, unsubscribed.mode, unsubscribed.recipients) == (
        world.tenant.id,
        "live",
        ["Ada.One@example.test"],  # the recipient as it was sent to
    )
    assert (unsubscribed.source, unsubscribed.unsubscribe_all) == ("OneClick", True)


async def unsubscribed_events(rt: Runtime, email_id: str) -> list[EmailUnsubscribed]:
    async with rt.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox"
            " WHERE subject = %s AND convert_from(payload, 'UTF8')::jsonb ->> 'email_id' = %s",
            (EMAIL_UNSUBSCRIBED, email_id),
        )
        return [decode(bytes(r["payload"]), EmailUnsubscribed) for r in await cur.fetchall()]


async def test_get_shows_a_page_and_changes_nothing(runtime: Runtime, https: httpx.AsyncClient) -> None:
    tenant = await make_tenant(runtime)
    name = unique_domain()
    await add_domain(runtime, tenant.id, name)
    _, url = await _broadcast_url(runtime, https, tenant.live, f"n@{name}", "grace@example.test")
    page = await https.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert re.search(r'<form method="post">.*<button type="submit">Unsubscribe</button>', page.text, re.S)
    assert "grace@example.test" in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert await suppressions(runtime, tenant.id) == []
    # The page's button: a form POST to the same URL.
    done = await https.post(url, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "grace@example.test" in done.text
    assert [s["email"] for s in await suppressions(runtime, tenant.id)] == ["grace@example.test"]


async def test_test_mode_links_record_test_mode(runtime: Runtime, https: httpx.AsyncClient) -> None:
    tenant = await make_tenant(runtime)
    email_id, url = await _broadcast_url(runtime, https, tenant.test, "n@unverified.example.test", "t@example.test")
    assert (await https.post(url)).status_code == 200
    assert await suppressions(runtime, tenant.id) == [
        {"mode": "test", "email": "t@example.test", "reason": "unsubscribe", "source_email_id": email_id}
    ]


def _tamper(token: str, part: int, change: Callable[[bytes], bytes]) -> str:
    pieces = token.split(".")
    raw = base64.urlsafe_b64decode(pieces[part] + "=" * (-len(pieces[part]) % 4))
    pieces[part] = base64.urlsafe_b64encode(change(raw)).rstrip(b"=").decode()
    return ".".join(pieces)


async def test_tampered_foreign_or_unknown_tokens_are_404_and_record_nothing(
    world: World, runtime: Runtime, https: httpx.AsyncClient
) -> None:
    other = await make_tenant(runtime, "Other")
    email_id, url = await _broadcast_url(runtime, https, world.tenant.live, f"n@{world.domain}", "x@example.test")
    prefix, token = url.rsplit("/", 1)
    payload = msgspec.json.decode(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    # The same signature over another tenant's id (or another address, or mode): the MAC fails.
    foreign = _tamper(token, 1, lambda raw: raw.replace(world.tenant.id.encode(), other.id.encode()))
    address = _tamper(token, 1, lambda raw: raw.replace(b"x@example.test", b"y@example.test"))
    mode = _tamper(token, 1, lambda raw: raw.replace(b'"live"', b'"test"'))
    flipped_mac = _tamper(token, 2, lambda raw: bytes([raw[0] ^ 1]) + raw[1:])
    other_secret = sign(b"another secret of forty characters......", Unsubscriber(*payload))
    cases = [
        foreign,
        address,
        mode,
        flipped_mac,
        other_secret,
        token[:-2],
        token + "A",
        "v1.e30.AAAA",
        "v2" + token[2:],
    ]
    cases += ["x" * 3000, "not-a-token", token.replace(".", "", 1)]
    before = await table_counts(runtime, "suppressions", "outbox")
    for bad in cases:
        for method in ("POST", "GET"):
            resp = await https.request(method, f"{prefix}/{bad}")
            assert resp.status_code == 404, (bad, method, resp.text)
            assert resp.json()["error"] == "not_found"
    assert await table_counts(runtime, "suppressions", "outbox") == before
    assert await suppressions(runtime, other.id) == []
    # A genuine token made for a tenant that does not exist (a secret leak test would need more): 404.
    ghost = sign(SECRET.encode(), Unsubscriber("ten_" + "0" * 26, "live", email_id, "g@example.test"))
    assert (await https.post(f"{prefix}/{ghost}")).status_code == 404
    assert await table_counts(runtime, "suppressions", "outbox") == before


async def test_without_a_secret_no_token_is_valid(world: World, runtime: Runtime, client: httpx.AsyncClient) -> None:
    token = sign(SECRET.encode(), Unsubscriber(world.tenant.id, "live", "msg_" + "0" * 26, "z@example.test"))
    assert (await client.post(f"/v1/unsubscribe/{token}")).status_code == 404
    assert (await client.get(f"/v1/unsubscribe/{token}")).status_code == 404


# --------------------------------------------------------------------------- default sender


async def test_default_sender(runtime: Runtime, client: httpx.AsyncClient) -> None:
    tenant = await make_tenant(runtime)
    verified, pending = unique_domain(), unique_domain()
    await add_domain(runtime, tenant.id, verified)
    await add_domain(runtime, tenant.id, pending, status="pending")
    live = bearer(tenant.live)
    assert (await client.get("/v1/settings", headers=live)).json() == {"default_from": None}
    # No from and no default: 422 naming `from`, nothing written.
    before = await table_counts(runtime, "emails", "outbox")
    resp = await client.post("/v1/emails", json=body(None), headers=live)
    assert_error(resp, 422, "validation_error", "from")
    assert await table_counts(runtime, "emails", "outbox") == before

    resp = await client.patch("/v1/settings", json={"default_from": f"  Acme <hello@{verified}> "}, headers=live)
    assert resp.status_code == 200 and resp.json() == {"default_from": f"Acme <hello@{verified}>"}
    assert (await client.get("/v1/settings", headers=live)).json() == {"default_from": f"Acme <hello@{verified}>"}
    event = await queued_event(runtime, await send(client, tenant.live, body(None)))  # this process forgot at once
    assert (event.from_.email, event.from_.name) == (f"hello@{verified}", "Acme")
    detail = (await client.get(f"/v1/emails/{event.email_id}", headers=live)).json()
    assert detail["from"] == f"Acme <hello@{verified}>"
    # An explicit from still wins.
    explicit = await queued_event(runtime, await send(client, tenant.live, body(f"other@{verified}")))
    assert explicit.from_.email == f"other@{verified}"

    # Live keys need a verified domain of the tenant, as a send does; nothing changes when refused.
    resp = await client.patch("/v1/settings", json={"default_from": f"x@{pending}"}, headers=live)
    assert_error(resp, 403, "domain_not_verified", None)
    resp = await client.patch("/v1/settings", json={"default_from": "x@elsewhere.example.test"}, headers=live)
    assert_error(resp, 403, "domain_not_verified", None)
    resp = await client.patch("/v1/settings", json={"default_from": "not an address"}, headers=live)
    assert_error(resp, 422, "validation_error", "default_from")
    assert (await client.get("/v1/settings", headers=live)).json() == {"default_from": f"Acme <hello@{verified}>"}
    # Sending-access keys cannot change settings; an empty PATCH changes nothing.
    assert_error(await client.get("/v1/settings", headers=bearer(tenant.sending)), 403, "insufficient_permission", None)
    assert (await client.patch("/v1/settings", json={}, headers=live)).json() == {
        "default_from": f"Acme <hello@{verified}>"
    }
    # Test keys may use any domain (test sends may); null clears it.
    resp = await client.patch("/v1/settings", json={"default_from": f"t@{pending}"}, headers=bearer(tenant.test))
    assert resp.status_code == 200 and resp.json() == {"default_from": f"t@{pending}"}
    assert (await queued_event(runtime, await send(client, tenant.test, body(None)))).from_.email == f"t@{pending}"
    # ... and a live send with that default is then refused like any unverified from.
    assert_error(await client.post("/v1/emails", json=body(None), headers=live), 403, "domain_not_verified", None)
    assert (await client.patch("/v1/settings", json={"default_from": None}, headers=live)).json() == {
        "default_from": None
    }
    assert_error(await client.post("/v1/emails", json=body(None), headers=live), 422, "validation_error", "from")


async def test_default_sender_reaches_other_processes_by_notify(runtime: Runtime, client: httpx.AsyncClient) -> None:
    """Another API process (a second app with its own key cache) sees the change within the NOTIFY."""
    tenant = await make_tenant(runtime)
    name = unique_domain()
    await add_domain(runtime, tenant.id, name)
    async with serve(create_app(runtime)) as other:
        assert_error(
            await other.post("/v1/emails", json=body(None), headers=bearer(tenant.live)),
            422,
            "validation_error",
            "from",
        )
        resp = await client.patch("/v1/settings", json={"default_from": f"d@{name}"}, headers=bearer(tenant.live))
        assert resp.status_code == 200

        async def other_uses_it() -> bool:
            resp = await other.post("/v1/emails", json=body(None), headers=bearer(tenant.live))
            return resp.status_code == 202

        await eventually(other_uses_it)


async def test_an_idn_recipient_is_suppressed_in_its_normalised_form(
    world: World, runtime: Runtime, https: httpx.AsyncClient
) -> None:
    email_id, url = await _broadcast_url(runtime, https, world.tenant.live, f"n@{world.domain}", "Reader@Bücher.test")
    token = url.rsplit("/", 1)[1]
    assert b"xn--bcher-kva.test" in base64.urlsafe_b64decode(token.split(".")[1] + "==")  # ASCII in the link
    assert (await https.post(url)).status_code == 200
    assert {"mode": "live", "email": "reader@bücher.test", "reason": "unsubscribe", "source_email_id": email_id} in (
        await suppressions(runtime, world.tenant.id)
    )


def test_broadcast_settings_are_validated() -> None:
    from mailroom_api.settings import ApiSettings

    ok = ApiSettings.from_env(
        {"MAILROOM_API_UNSUBSCRIBE_SECRET": SECRET, "MAILROOM_API_PUBLIC_URL": "https://mail-api.example.com/"}
    )
    assert ok.unsubscribe_links is not None and ok.unsubscribe_links.public_url == "https://mail-api.example.com"
    assert ApiSettings.from_env({"MAILROOM_API_UNSUBSCRIBE_SECRET": SECRET}).unsubscribe_links is None
    assert ApiSettings.from_env({}).unsubscribe_links is None
    local = ApiSettings.from_env({"MAILROOM_API_PUBLIC_URL": "http://127.0.0.1:8000"})
    assert local.public_url == "http://127.0.0.1:8000"
    for env, name in (
        ({"MAILROOM_API_UNSUBSCRIBE_SECRET": "short"}, "UNSUBSCRIBE_SECRET"),
        ({"MAILROOM_API_PUBLIC_URL": "http://mail-api.example.com"}, "PUBLIC_URL"),
        ({"MAILROOM_API_PUBLIC_URL": "https://a.test/?q=1"}, "PUBLIC_URL"),
        ({"MAILROOM_API_PUBLIC_URL": "https://" + "a" * 200 + ".test"}, "PUBLIC_URL"),
        ({"MAILROOM_API_UNSUBSCRIBE_MAILTO": "Acme <u@a.test>"}, "UNSUBSCRIBE_MAILTO"),
    ):
        with pytest.raises(ValueError, match=name):
            ApiSettings.from_env(env)


def test_the_size_bound_counts_the_broadcast_headers() -> None:
    """A message just under the limit as transactional is over it as broadcast: the sender adds the
    List-Unsubscribe headers, so the API's bound must include them."""
    from mailroom_api.emails.schemas import SendEmail
    from mailroom_api.emails.validation import validate_send
    from mailroom_api.errors import ApiError

    def request(stream: str) -> SendEmail:
        fields = body("a@acme.test", text="x" * 20_000, stream=stream)
        del fields["html"]
        return msgspec.convert(fields, SendEmail)

    limit = 20_000
    while True:  # the smallest limit the transactional message fits
        try:
            validate_send(request("transactional"), max_message_bytes=limit)
            break
        except ApiError:
            limit += 256
    with pytest.raises(ApiError) as refused:
        validate_send(request("broadcast"), max_message_bytes=limit)
    assert refused.value.status == 413
    validate_send(request("broadcast"), max_message_bytes=limit + 2 * 1024 + 100)


def test_the_longest_links_fit_the_header_and_the_size_allowance() -> None:
    """With the longest public URL and mailto the settings allow and the longest address, each URI
    stays within the sender's 900-character bound (one header line) and both within the allowance."""
    from mailroom_api.unsubscribe.tokens import UnsubscribeLinks

    links = UnsubscribeLinks(
        secret=SECRET.encode(), public_url="https://" + "a" * 192, mailto="m" * 64 + "@" + "d" * 189
    )
    address = "l" * 64 + "@" + ".".join(["d" * 63] * 3) + "." + "t" * 61  # 64 + 1 + 253
    url, mailto = links.for_recipient(Unsubscriber("ten_" + "0" * 26, "live", "msg_" + "0" * 26, address))
    assert mailto is not None and len(url) <= 900 and len(mailto) <= 900
    header = len(f"List-Unsubscribe: <{url}>,\r\n <{mailto}>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    assert header <= 2 * 1024 + 100
