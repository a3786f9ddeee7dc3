"""Fixtures for the domains suite: the `domains` schema migrated once in the session database, a
private nats-server (the MAILROOM_DOMAIN stream must not collide with other suites), SES
emulators in `immediate` and `never` verify modes, and a way to run the service's real workers
in-process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from mailroom_contracts.streams import STREAMS
from mailroom_devstack.infra import NatsServer
from mailroom_domains.app import MIGRATIONS, build_service, build_workers
from mailroom_domains.checks import RecordChecker, SesStatusChecker
from mailroom_domains.service import SCHEMA
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.runtime import Runtime
from mailroom_ses_emulator import EmulatorConfig, EmulatorServer
from nats.aio.client import Client

sys.path.insert(0, str(Path(__file__).parent))

from domains_testkit import REGION, RunningDomains, Starter, make_settings, ses_client


@pytest.fixture(scope="session")
async def migrated(database_url: str) -> str:
    await migrate(database_url, SCHEMA, MIGRATIONS)
    return database_url


@pytest.fixture(scope="session")
async def pool(migrated: str) -> AsyncIterator[Pool]:
    p = await open_pool(migrated, SCHEMA, min_size=1, max_size=10)
    yield p
    await p.close()


@pytest.fixture
async def clean_db(pool: Pool) -> AsyncIterator[None]:
    """Tests that commit leave nothing behind (the schema belongs to this suite alone)."""
    yield
    async with pool.connection() as conn:
        await conn.execute("TRUNCATE domain_records, domains, outbox, inbox")


@pytest.fixture(scope="module")
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("domains-nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def emulator_immediate() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(port=0, region=REGION, verify="immediate")) as server:
        yield server


@pytest.fixture(scope="session")
def emulator_never() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(port=0, region=REGION, verify="never")) as server:
        yield server


@pytest.fixture
async def nats_client(own_nats: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(own_nats.url)
    await reconcile(nc.jetstream(), STREAMS, [])
    yield nc
    await nc.close()


@pytest.fixture
async def start_domains(migrated: str, own_nats: NatsServer) -> AsyncIterator[Starter]:
    """`await start_domains(emulator_url, **settings)` runs the workers until the test ends."""
    running: list[RunningDomains] = []

    async def start(
        emulator_url: str,
        *,
        checker: RecordChecker | None = None,
        workers: bool = True,
        dns: bool = False,
        clock: Callable[[], datetime] | None = None,
        **overrides: Any,
    ) -> RunningDomains:
        """`dns=True`: the service's own public-DNS checker on the settings' resolvers (pass
        dns_nameservers/dns_port); else the SES-status checker unless `checker` is given."""
        settings = make_settings(migrated, own_nats.url, emulator_url, **overrides)
        if checker is None and not dns:
            checker = SesStatusChecker()
        service = build_service(
            settings,
            ses=ses_client(emulator_url, timeout=settings.ses_timeout_seconds),
            checker=checker,
            clock=clock,
            rng=random.Random(18),
        )
        p = await open_pool(migrated, SCHEMA, min_size=1, max_size=8)
        nc = await nats.connect(own_nats.url)
        js = nc.jetstream()
        await reconcile(js, STREAMS, [])
        rt = Runtime(name="domains", schema=SCHEMA, settings=settings, migrations_dir=MIGRATIONS, pool=p, nc=nc, js=js)
        tasks = [asyncio.create_task(w(rt)) for w in build_workers(service)] if workers else []
        instance = RunningDomains(runtime=rt, service=service, tasks=tasks)
        running.append(instance)
        await asyncio.sleep(0.05)  # let the responder subscribe
        await nc.flush()
        return instance

    yield start
    for instance in running:
        with contextlib.suppress(Exception):
            await instance.stop()
