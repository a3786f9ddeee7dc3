"""Fixtures for the api suite: the `api` schema migrated once per session, a private nats-server
per module (JetStream streams are global names), a real kit Runtime over them, and the real app
served by uvicorn on the test loop (real HTTP, see api_testkit.serve)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from mailroom_api.app import CONSUMERS, MIGRATIONS, WORKERS, create_app
from mailroom_api.settings import ApiSettings
from mailroom_contracts.streams import STREAMS
from mailroom_devstack.infra import NatsServer
from mailroom_kit.db import open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.runtime import Runtime

sys.path.insert(0, str(Path(__file__).parent))

from api_testkit import OPERATOR_TOKEN, serve


@pytest.fixture(scope="session")
async def api_database_url(database_url: str) -> str:
    await migrate(database_url, "api", MIGRATIONS)
    return database_url


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = NatsServer(tmp_path_factory.mktemp("api-nats")).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
async def runtime(api_database_url: str, module_nats: str) -> AsyncIterator[Runtime]:
    settings = ApiSettings(
        database_url=api_database_url,
        nats_url=module_nats,
        operator_token=OPERATOR_TOKEN,
        rpc_timeout_seconds=2.0,
    )
    pool = await open_pool(api_database_url, "api", min_size=1, max_size=10)
    nc = await nats.connect(module_nats)
    js = nc.jetstream()
    await reconcile(js, STREAMS, CONSUMERS)
    rt = Runtime(name="api", schema="api", settings=settings, migrations_dir=MIGRATIONS, pool=pool, nc=nc, js=js)
    yield rt
    rt.stop.set()
    await nc.close()
    await pool.close()


@pytest.fixture(scope="module")
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(create_app(runtime)) as c:
        yield c


@pytest.fixture(scope="module")
async def workers(runtime: Runtime) -> AsyncIterator[None]:
    """The service's real workers: email log and domain projectors and the outbox relay."""
    tasks = [asyncio.create_task(w(runtime)) for w in WORKERS]
    yield
    runtime.stop.set()
    await asyncio.wait(tasks, timeout=15)
    for t in tasks:
        t.cancel()
        with contextlib.suppress(BaseException):
            await t
