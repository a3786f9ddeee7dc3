"""Create-domain RPC end to end: real responder on a private nats-server, real Postgres, the SES emulator."""

from __future__ import annotations

import asyncio
from typing import cast

import httpx
import pytest
from domains_testkit import Starter, domain_events, ses_client, unique_domain, wait_for
from mailroom_contracts import subjects
from mailroom_contracts.events import DomainCreated
from mailroom_contracts.rpc import CreateDomainRequest, DomainReply
from mailroom_devstack.infra import free_port
from mailroom_kit import rpc
from mailroom_kit.db import Pool
from mailroom_ses_emulator import EmulatorServer
from nats.aio.client import Client

pytestmark = pytest.mark.usefixtures("clean_db")


async def create(nc: Client, **fields: object) -> DomainReply:
    req = CreateDomainRequest(**fields)  # type: ignore[arg-type]
    return await rpc.request(nc, subjects.RPC_DOMAINS_CREATE, req, DomainReply, timeout=20)


def emulator_identity(emulator: EmulatorServer, name: str) -> dict[str, object]:
    identities = httpx.get(f"{emulator.url}/_emulator/identities").json()["identities"]
    return next(i for i in identities if i["identity"] == name)


async def test_create_registers_ses_identity_stores_records_and_publishes(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    await start_domains(emulator_never.url)
    name = unique_domain()
    reply = await create(nats_client, tenant_id="ten_a", name=name.upper(), mail_from_subdomain="mf", track_opens=True)
    assert reply.error is None and reply.domain is not None
    dom = reply.domain
    assert dom.domain_id.startswith("dom_") and len(dom.domain_id) == 30
    assert (dom.tenant_id, dom.name, dom.status, dom.region) == ("ten_a", name, "pending", "us-east-1")
    assert (dom.mail_from_domain, dom.track_opens, dom.track_clicks) == (f"mf.{name}", True, False)
    assert dom.last_checked_at is None

    # The DKIM tokens are the emulator's, and the MAIL FROM domain is set on the identity.
    ident = emulator_identity(emulator_never, name)
    tokens = ident["dkim_tokens"]
    assert isinstance(tokens, list) and len(tokens) == 3
    assert (ident["mail_from_domain"], ident["mail_from_behavior"]) == (f"mf.{name}", "USE_DEFAULT_VALUE")
    dkim = [r for r in dom.records if r.purpose == "dkim"]
    assert [(r.type, r.name, r.value) for r in dkim] == [
        ("CNAME", f"{t}._domainkey.{name}", f"{t}.dkim.amazonses.com") for t in tokens
    ]
    assert [(r.purpose, r.type, r.name, r.value, r.priority, r.required) for r in dom.records[3:]] == [
        ("mail_from_mx", "MX", f"mf.{name}", "feedback-smtp.us-east-1.amazonses.com", 10, True),
        ("mail_from_spf", "TXT", f"mf.{name}", "v=spf1 include:amazonses.com ~all", None, True),
        ("dmarc", "TXT", f"_dmarc.{name}", "v=DMARC1; p=none;", None, False),
    ]
    assert all(r.status == "pending" for r in dom.records)
    # The 2048-bit Easy DKIM key was asked for.
    resp = await asyncio.to_thread(ses_client(emulator_never.url)._client.get_email_identity, EmailIdentity=name)
    assert resp["DkimAttributes"]["NextSigningKeyLength"] == "RSA_2048_BIT"

    # Stored, and DomainCreated carries the same snapshot on the stream.
    async with pool.connection() as conn:
        row = await (
            await conn.execute("SELECT tenant_id, name, status FROM domains WHERE id = %s", (dom.domain_id,))
        ).fetchone()
        count = await (
            await conn.execute("SELECT count(*) AS n FROM domain_records WHERE domain_id = %s", (dom.domain_id,))
        ).fetchone()
    assert row == {"tenant_id": "ten_a", "name": name, "status": "pending"}
    assert count is not None and count["n"] == 6
    js = nats_client.jetstream()
    events = await wait_for(lambda: domain_events(js, dom.domain_id))
    assert len(events) == 1 and isinstance(events[0], DomainCreated)
    assert events[0].domain == dom and events[0].tenant_id == "ten_a"


async def test_a_registered_name_conflicts_for_another_tenant_and_is_idempotent_for_the_same(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    await start_domains(emulator_never.url)
    name = unique_domain()
    first = await create(nats_client, tenant_id="ten_a", name=name)
    assert first.domain is not None

    other = await create(nats_client, tenant_id="ten_b", name=name.upper())
    assert other.domain is None and other.error is not None
    assert (other.error.code, other.error.param) == ("conflict", "name")
    assert "another account" in other.error.message

    # The same tenant adding it again gets the domain it has (idempotent re-add), nothing new.
    same = await create(nats_client, tenant_id="ten_a", name=name)
    assert same.error is None and same.domain is not None
    assert same.domain.domain_id == first.domain.domain_id
    assert [r.value for r in same.domain.records] == [r.value for r in first.domain.records]

    # A failed registration no longer holds the name; the SES identity is reused with its tokens.
    async with pool.connection() as conn:
        await conn.execute("UPDATE domains SET status = 'failed' WHERE id = %s", (first.domain.domain_id,))
    again = await create(nats_client, tenant_id="ten_b", name=name)
    assert again.error is None and again.domain is not None
    assert again.domain.domain_id != first.domain.domain_id
    assert [r.name for r in again.domain.records] == [r.name for r in first.domain.records]
    async with pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT tenant_id, status FROM domains WHERE name = %s ORDER BY id", (name,))
        ).fetchall()
    assert rows == [{"tenant_id": "ten_a", "status": "failed"}, {"tenant_id": "ten_b", "status": "pending"}]


async def test_concurrent_creates_of_one_name_register_it_once(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    await start_domains(emulator_never.url)
    await start_domains(emulator_never.url)  # a second replica in the same queue group
    name = unique_domain()
    replies = await asyncio.gather(*(create(nats_client, tenant_id=f"ten_{i}", name=name) for i in range(6)))
    winners = [r for r in replies if r.domain is not None]
    losers = [r for r in replies if r.error is not None]
    assert len(winners) == 1 and len(losers) == 5
    assert all(r.error is not None and r.error.code == "conflict" for r in losers)
    async with pool.connection() as conn:
        n = await (await conn.execute("SELECT count(*) AS n FROM domains WHERE name = %s", (name,))).fetchone()
    assert n == {"n": 1}
    tokens = cast(list[str], emulator_identity(emulator_never, name)["dkim_tokens"])
    assert winners[0].domain is not None
    assert [r.value for r in winners[0].domain.records[:3]] == [f"{t}.dkim.amazonses.com" for t in tokens]


async def test_an_identity_already_in_ses_is_reused(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client
) -> None:
    await start_domains(emulator_never.url)
    name = unique_domain()
    ses = ses_client(emulator_never.url)
    tokens = await ses.create_domain_identity(name)
    reply = await create(nats_client, tenant_id="ten_a", name=name)
    assert reply.domain is not None
    assert [r.name for r in reply.domain.records[:3]] == [f"{t}._domainkey.{name}" for t in tokens]
    assert emulator_identity(emulator_never, name)["mail_from_domain"] == f"bounce.{name}"


INVALID_REQUESTS = [
    ({"name": "localhost"}, "name"),
    ({"name": "acme.com."}, "name"),
    ({"name": "192.168.1.1"}, "name"),
    ({"name": "-bad.example.com"}, "name"),
    ({"name": "ok.example.com", "mail_from_subdomain": "a.b"}, "mail_from_subdomain"),
    ({"name": "ok.example.com", "mail_from_subdomain": "-x"}, "mail_from_subdomain"),
]


async def test_invalid_requests_are_validation_errors(
    start_domains: Starter, emulator_never: EmulatorServer, nats_client: Client, pool: Pool
) -> None:
    await start_domains(emulator_never.url)
    for fields, param in INVALID_REQUESTS:
        reply = await create(nats_client, tenant_id="ten_a", **fields)
        assert reply.domain is None and reply.error is not None, fields
        assert (reply.error.code, reply.error.param) == ("validation_error", param), fields
    async with pool.connection() as conn:
        assert await (await conn.execute("SELECT 1 FROM domains")).fetchone() is None
    assert "ok.example.com" not in httpx.get(f"{emulator_never.url}/_emulator/identities").text


async def test_ses_unreachable_is_unavailable_and_stores_nothing(
    start_domains: Starter, nats_client: Client, pool: Pool
) -> None:
    await start_domains(f"http://127.0.0.1:{free_port()}", ses_timeout_seconds=1.0)
    reply = await create(nats_client, tenant_id="ten_a", name=unique_domain())
    assert reply.domain is None and reply.error is not None
    assert reply.error.code == "unavailable"
    async with pool.connection() as conn:
        assert await (await conn.execute("SELECT 1 FROM domains")).fetchone() is None
        assert await (await conn.execute("SELECT 1 FROM outbox")).fetchone() is None


async def test_a_hanging_ses_is_unavailable_within_the_deadline(
    start_domains: Starter, nats_client: Client, pool: Pool
) -> None:
    """SES accepts the connection and never answers: the caller hears `unavailable` in time."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await start_domains(f"http://127.0.0.1:{port}", ses_timeout_seconds=5.0, create_timeout_seconds=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await create(nats_client, tenant_id="ten_a", name=unique_domain())
        assert loop.time() - started < 3
        assert reply.error is not None and reply.error.code == "unavailable"
        assert "in time" in reply.error.message
        async with pool.connection() as conn:
            assert await (await conn.execute("SELECT 1 FROM domains")).fetchone() is None
    finally:
        for w in held:
            w.close()
        server.close()
