"""Fixtures for the events suite: the `events` schema migrated once per session, a private
nats-server per module (JetStream stream names are global), a real kit Runtime over them, the
real app behind Litestar's AsyncTestClient, and a real local HTTP server that serves the
certificate of a locally generated signing key and answers SubscribeURL GETs."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from litestar.testing import AsyncTestClient
from mailroom_contracts.streams import STREAMS
from mailroom_devstack.infra import NatsServer
from mailroom_events.app import MIGRATIONS, create_app
from mailroom_events.settings import EventsSettings
from mailroom_kit.db import open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.runtime import Runtime

sys.path.insert(0, str(Path(__file__).parent))

from events_testkit import LOCAL_PATTERN, LOCAL_TOPIC, CertServer, LocalSigner


@pytest.fixture(scope="session")
async def events_database(database_url: str) -> str:
    await migrate(database_url, "events", MIGRATIONS)
    return database_url


@pytest.fixture(scope="session")
def signer() -> LocalSigner:
    return LocalSigner()


@pytest.fixture(scope="session")
def cert_server(signer: LocalSigner) -> Iterator[CertServer]:
    server = CertServer(signer.pem).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def events_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("events-nats")).start()
    yield server
    server.stop()


def settings_for(database_url: str, nats_url: str) -> EventsSettings:
    return EventsSettings(
        database_url=database_url,
        nats_url=nats_url,
        sns_topic_arns=f" {LOCAL_TOPIC} , arn:aws:sns:us-east-1:000000000000:another",
        sns_cert_host_pattern=LOCAL_PATTERN,
        sns_allow_http=True,
    )


@pytest.fixture(scope="module")
async def runtime(events_database: str, events_nats: NatsServer) -> AsyncIterator[Runtime]:
    settings = settings_for(events_database, events_nats.url)
    pool = await open_pool(events_database, "events", min_size=1, max_size=8)
    nc = await nats.connect(events_nats.url)
    js = nc.jetstream()
    await reconcile(js, STREAMS, [])
    rt = Runtime(name="events", schema="events", settings=settings, migrations_dir=MIGRATIONS, pool=pool, nc=nc, js=js)
    yield rt
    rt.stop.set()
    await nc.close()
    await pool.close()


@pytest.fixture(scope="module")
async def client(runtime: Runtime) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=create_app(runtime)) as test_client:
        yield test_client
