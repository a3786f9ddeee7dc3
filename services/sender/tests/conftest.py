"""Sender fixtures: the `sender` schema migrated once on the session database, a pool on it,
the real SES v2 emulator in-process on a free port, and helpers to build events and read
back the emulator's sent list and the outbox."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import msgspec
import pytest
from botocore.client import BaseClient
from mailroom_contracts import decode_event
from mailroom_contracts.events import Address, EmailQueued, Event
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.ids import new_id
from mailroom_kit.migrations import migrate
from mailroom_sender.app import MIGRATIONS
from mailroom_sender.handlers import SenderHandlers
from mailroom_sender.providers import SesProvider, SimulatorProvider, make_ses_client
from mailroom_sender.service import SCHEMA, SenderService
from mailroom_ses_emulator import EmulatorConfig, EmulatorServer

CONFIG_SET = "mailroom-transactional"
VERIFIED_DOMAIN = "mail.acme.test"


@pytest.fixture(scope="session")
async def sender_db(database_url: str) -> str:
    await migrate(database_url, SCHEMA, MIGRATIONS)
    return database_url


@pytest.fixture(scope="session")
async def pool(sender_db: str) -> AsyncIterator[Pool]:
    p = await open_pool(sender_db, SCHEMA, min_size=1, max_size=20)
    yield p
    await p.close()


def ses_client(url: str) -> BaseClient:
    return make_ses_client(
        region="us-east-1",
        endpoint_url=url,
        max_pool_connections=20,
        connect_timeout=2,
        read_timeout=5,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def start_emulator(**config: Any) -> EmulatorServer:
    """An emulator on a free port with a verified domain and the configuration set."""
    server = EmulatorServer(EmulatorConfig(port=0, verify="immediate", **config)).start()
    admin = boto3.client(
        "sesv2",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    admin.create_email_identity(EmailIdentity=VERIFIED_DOMAIN)
    admin.create_configuration_set(ConfigurationSetName=CONFIG_SET)
    return server


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    server = start_emulator()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ses_provider(emulator: EmulatorServer) -> Iterator[SesProvider]:
    provider = SesProvider(ses_client(emulator.url), configuration_set=CONFIG_SET, max_concurrency=16)
    yield provider
    provider.close()


def make_service(ses: SesProvider, *, in_doubt_seconds: float = 600.0, recheck: float = 15.0) -> SenderService:
    return SenderService(
        ses=ses,
        simulator=SimulatorProvider(),
        in_doubt_seconds=in_doubt_seconds,
        in_doubt_recheck_seconds=recheck,
    )


@pytest.fixture
def handlers(pool: Pool, ses_provider: SesProvider) -> SenderHandlers:
    return SenderHandlers(pool, make_service(ses_provider))


def queued(
    *,
    to: list[str] | None = None,
    mode: str = "live",
    from_email: str = f"noreply@{VERIFIED_DOMAIN}",
    **kw: Any,
) -> EmailQueued:
    fields: dict[str, Any] = {
        "event_id": new_id("evt"),
        "occurred_at": datetime.now(UTC),
        "tenant_id": "ten_test",
        "email_id": new_id("msg"),
        "mode": mode,
        "from_": Address(email=from_email, name="Acme"),
        "to": [Address(email=a) for a in (to or ["someone@example.org"])],
        "subject": "Your receipt",
        "text": "Thanks!",
        "html": "<p>Thanks!</p>",
        "created_at": datetime.now(UTC),
    }
    fields.update(kw)
    return EmailQueued(**fields)


def redelivered(event: EmailQueued) -> EmailQueued:
    """The same email on another delivery (new event id, as a re-published copy would have)."""
    return msgspec.structs.replace(event, event_id=new_id("evt"))


def sent_messages(server: EmulatorServer, email_id: str | None = None) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = httpx.get(f"{server.url}/_emulator/sent", timeout=5).json()["messages"]
    if email_id is None:
        return messages
    return [m for m in messages if m["tags"].get("mailroom_email_id") == email_id]


async def outbox_events(pool: Pool, email_id: str) -> list[Event]:
    """Events for `email_id` still waiting in the sender's outbox, in publish order."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT payload FROM outbox WHERE convert_from(payload, 'UTF8')::jsonb ->> 'email_id' = %s ORDER BY id",
            (email_id,),
        )
        return [decode_event(bytes(r["payload"])) for r in await cur.fetchall()]


async def delivery_row(pool: Pool, email_id: str) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM deliveries WHERE email_id = %s", (email_id,))
        return await cur.fetchone()


class BlackHole:
    """A real TCP server that reads requests and never answers: SES taking the request and the
    response never coming back (the read timeout that leaves a send in doubt)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> BlackHole:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(65536)
            if data:
                self.received += 1
            await reader.read()  # until the client gives up
            writer.close()

        self._server = await asyncio.start_server(swallow, sock=self.sock)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = await BlackHole().start()
    yield hole
    await hole.stop()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
