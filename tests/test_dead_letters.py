"""Dead letters and unknown event types with the real contract consumers, the real webhooks
handlers and the `mailroom admin dlq` / migration-check CLI (real Postgres, own nats-server)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import psycopg
import pytest
from cryptography.fernet import Fernet
from mailroom_contracts import encode, subject_for
from mailroom_contracts.events import Address, DomainCreated, DomainSnapshot, EmailQueued, Event
from mailroom_contracts.streams import API_DOMAINS, STREAMS, WEBHOOKS_DOMAINS, WEBHOOKS_EMAIL, ConsumerSpec
from mailroom_devstack.infra import NatsServer, Postgres
from mailroom_devstack.pytest_plugin import consumer_settled, eventually
from mailroom_kit import dlq
from mailroom_kit.consumer import Permanent, consume, consume_batches
from mailroom_kit.db import open_pool
from mailroom_kit.ids import new_id
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_webhooks.app import MIGRATIONS as WEBHOOKS_MIGRATIONS
from mailroom_webhooks.app import SCHEMA as WEBHOOKS_SCHEMA
from mailroom_webhooks.handlers import EventHandlers
from mailroom_webhooks.settings import WebhooksSettings
from nats.aio.msg import Msg
from nats.js import JetStreamContext

NOW = datetime(2026, 12, 1, tzinfo=UTC)
# An internal team's own subscriber on the whole email lifecycle (SPEC §3).
INTERNAL_TEAM = ConsumerSpec(
    durable="team-analytics", stream="MAILROOM_EMAIL", filter_subjects=["mailroom.email.>"], description="test"
)


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("dlq-nats")).start()
    yield server.url
    server.stop()


@pytest.fixture
async def js(own_nats: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(own_nats)
    js = nc.jetstream()
    await reconcile(js, STREAMS, [API_DOMAINS, WEBHOOKS_EMAIL, WEBHOOKS_DOMAINS, INTERNAL_TEAM])
    yield js
    await nc.close()


async def settled(js: JetStreamContext, spec: ConsumerSpec) -> bool:
    return await consumer_settled(js, spec.stream, spec.durable)


def queued(tenant: str) -> EmailQueued:
    return EmailQueued(
        event_id=new_id("evt"),
        occurred_at=NOW,
        tenant_id=tenant,
        email_id=new_id("msg"),
        from_=Address(email="a@example.test"),
        to=[Address(email="b@example.test")],
        subject="Hi",
        text="x",
        created_at=NOW,
    )


def domain_created(tenant: str) -> DomainCreated:
    snapshot = DomainSnapshot(
        domain_id=new_id("dom"),
        tenant_id=tenant,
        name="example.test",
        status="pending",
        region="us-east-1",
        mail_from_domain="bounce.example.test",
        created_at=NOW,
        records=[],
    )
    return DomainCreated(event_id=new_id("evt"), occurred_at=NOW, tenant_id=tenant, domain=snapshot)


async def publish(js: JetStreamContext, event: Event) -> None:
    await js.publish(subject_for(event), encode(event), headers={"Nats-Msg-Id": event.event_id})


def run_cli(*args: str, nats_url: str = "", database_url: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if nats_url:
        env["MAILROOM_NATS_URL"] = nats_url
    if database_url:
        env["MAILROOM_DATABASE_URL"] = database_url
    mailroom = Path(sys.executable).parent / "mailroom"
    return subprocess.run([str(mailroom), *args], env=env, capture_output=True, text=True, timeout=60)


async def test_old_consumers_ignore_future_event_types_and_carry_on(js: JetStreamContext, database_url: str) -> None:
    """A newer replica publishes `domain.future_thing` and `email.future_thing`: api-domains (on
    mailroom.domain.>) and an internal team's consumer (on mailroom.email.>) ack and ignore them;
    the webhooks consumers (exact subjects) never get them; all handle the next known event. A
    garbage payload on an exact subject is dead-lettered."""
    await migrate(database_url, WEBHOOKS_SCHEMA, WEBHOOKS_MIGRATIONS)
    pool = await open_pool(database_url, WEBHOOKS_SCHEMA)
    webhooks = EventHandlers(pool, WebhooksSettings(secret_key=Fernet.generate_key().decode()))
    seen: dict[str, list[str]] = {API_DOMAINS.durable: [], INTERNAL_TEAM.durable: []}

    def recorder(spec: ConsumerSpec):  # type: ignore[no-untyped-def]
        async def handler(event: Event, msg: Msg) -> None:
            seen[spec.durable].append(event.event_id)

        return handler

    tenant = new_id("ten")
    future_domain = {"type": "domain.future_thing", "event_id": new_id("evt"), "tenant_id": tenant, "new": 1}
    future_email = {"type": "email.future_thing", "event_id": new_id("evt"), "tenant_id": tenant, "email_id": "m"}
    await js.publish("mailroom.domain.future_thing", msgspec.json.encode(future_domain))
    await js.publish("mailroom.email.future_thing", msgspec.json.encode(future_email))
    await js.publish(WEBHOOKS_EMAIL.filter_subjects[0], b"\x00garbage")  # mailroom.email.queued
    known_domain, known_email = domain_created(tenant), queued(tenant)
    await publish(js, known_domain)
    await publish(js, known_email)

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(consume(js, API_DOMAINS, recorder(API_DOMAINS), stop=stop)),
        asyncio.create_task(consume(js, INTERNAL_TEAM, recorder(INTERNAL_TEAM), stop=stop)),
        asyncio.create_task(consume_batches(js, WEBHOOKS_EMAIL, webhooks.on_email_events, stop=stop)),
        asyncio.create_task(consume(js, WEBHOOKS_DOMAINS, webhooks.on_domain_event, stop=stop)),
    ]
    try:
        await eventually(lambda: seen[API_DOMAINS.durable] == [known_domain.event_id])
        await eventually(lambda: seen[INTERNAL_TEAM.durable] == [known_email.event_id])
        for spec in (API_DOMAINS, INTERNAL_TEAM, WEBHOOKS_EMAIL, WEBHOOKS_DOMAINS):
            await eventually(lambda spec=spec: settled(js, spec))  # type: ignore[misc]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
    # The webhooks consumer recorded the known email's summary after the garbage.
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT email_id FROM email_summaries WHERE tenant_id = %s", (tenant,))
        assert [r["email_id"] for r in await cur.fetchall()] == [known_email.email_id]
    await pool.close()
    for spec in (API_DOMAINS, WEBHOOKS_DOMAINS):
        assert await dlq.list_dead_letters(js, consumer=spec.durable) == [], spec.durable
    # Garbage is bad data, not a future type: every consumer that got it dead-lettered it.
    for spec in (WEBHOOKS_EMAIL, INTERNAL_TEAM):
        [garbage] = await dlq.list_dead_letters(js, consumer=spec.durable)
        assert garbage.letter.reason == "undecodable" and garbage.letter.payload == b"\x00garbage"
        assert garbage.letter.subject == "mailroom.email.queued" and garbage.letter.event_type is None
        await js.delete_msg("MAILROOM_DLQ", garbage.seq)


async def test_cli_lists_and_replays_dead_letters(js: JetStreamContext, own_nats: str) -> None:
    """`mailroom admin dlq list|replay` against the real stream: after the fix, the replayed
    message is handled by the consumer that gave up on it."""
    broken = True
    handled: list[str] = []

    async def handler(event: Event, msg: Msg) -> None:
        if broken:
            raise Permanent("domain snapshot refused by the read model")
        handled.append(event.event_id)

    tenant = new_id("ten")
    events = [domain_created(tenant), domain_created(tenant)]
    stop = asyncio.Event()
    task = asyncio.create_task(consume(js, API_DOMAINS, handler, stop=stop))
    try:
        for ev in events:
            await publish(js, ev)

        async def both() -> bool:
            return len(await dlq.list_dead_letters(js, consumer=API_DOMAINS.durable)) == 2

        await eventually(both)
        listed = await asyncio.to_thread(run_cli, "admin", "dlq", "list", "--json", nats_url=own_nats)
        assert listed.returncode == 0, listed.stderr
        data = json.loads(listed.stdout)["data"]
        assert [d["event_id"] for d in data] == [ev.event_id for ev in events]
        first = data[0]
        assert first["consumer"] == API_DOMAINS.durable and first["reason"] == "permanent"
        assert first["subject"] == "mailroom.domain.created" and first["deliveries"] == 1
        assert first["error"] == "domain snapshot refused by the read model"
        assert base64.b64decode(first["payload"]) == encode(events[0])  # byte for byte
        plain = await asyncio.to_thread(
            run_cli, "admin", "dlq", "list", "--consumer", API_DOMAINS.durable, nats_url=own_nats
        )
        assert plain.returncode == 0 and plain.stdout.count("\n") == 2 and events[1].event_id in plain.stdout
        other = await asyncio.to_thread(run_cli, "admin", "dlq", "list", "--consumer", "nobody", nats_url=own_nats)
        assert other.returncode == 0 and other.stdout == ""

        broken = False  # the fix is deployed
        one = await asyncio.to_thread(run_cli, "admin", "dlq", "replay", "--seq", str(first["seq"]), nats_url=own_nats)
        assert one.returncode == 0, one.stderr
        await eventually(lambda: handled == [events[0].event_id])
        rest = await asyncio.to_thread(
            run_cli, "admin", "dlq", "replay", "--all", "--consumer", API_DOMAINS.durable, nats_url=own_nats
        )
        assert rest.returncode == 0 and events[1].event_id in rest.stdout
        await eventually(lambda: handled == [ev.event_id for ev in events])
        assert await dlq.list_dead_letters(js, consumer=API_DOMAINS.durable) == []
        again = await asyncio.to_thread(
            run_cli, "admin", "dlq", "replay", "--seq", str(first["seq"]), nats_url=own_nats
        )
        assert again.returncode == 1 and "not_found" in again.stderr
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)


def test_cli_refuses_to_run_on_an_unmigrated_schema(postgres: Postgres) -> None:
    """The CLI no longer migrates: it says what to run and leaves the database alone."""
    from mailroom_api.app import MIGRATIONS as API_MIGRATIONS

    name = f"mailroom_cli_{secrets.token_hex(4)}"
    url = postgres.create_database(name)
    try:
        refused = run_cli("admin", "tenants", "list", database_url=url)
        assert refused.returncode == 1
        assert "migrations pending" in refused.stderr and "python -m mailroom_api migrate" in refused.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT to_regclass('api.schema_migrations')").fetchone() == (None,)
        asyncio.run(migrate(url, "api", API_MIGRATIONS))
        listed = run_cli("admin", "tenants", "list", database_url=url)
        assert listed.returncode == 0 and listed.stdout == "", listed.stderr
    finally:
        postgres.drop_database(name)
