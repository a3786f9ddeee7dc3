"""pytest fixtures for every Mailroom suite: a Postgres (the machine's, else pgserver) with a
fresh database per session, a pinned nats-server on a free port per session, and a local
authoritative DNS server (UDP and TCP, free port) per test whose zone the test changes."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from mailroom_devstack.dns import DnsServer
from mailroom_devstack.infra import NatsServer, Postgres, system_postgres_url


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("pg"), url=system_postgres_url()).start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def database_url(postgres: Postgres) -> Iterator[str]:
    name = f"mailroom_test_{secrets.token_hex(6)}"
    url = postgres.create_database(name)
    yield url
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """A local authoritative DNS server on a free port (`.port`, UDP and TCP); change `.zone` mid-test."""
    with DnsServer(control_port=0) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


async def rollback_connection(url: str, schema: str) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
    """A connection whose whole test runs in one transaction that is rolled back."""
    conn = await psycopg.AsyncConnection.connect(url, row_factory=dict_row, options=f"-c search_path={schema}")
    try:
        yield conn
    finally:
        await conn.rollback()
        await conn.close()


def repo_root() -> Path:
    return Path(__file__).resolve().parents[4]


async def eventually(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> None:
    """Wait until `check()` (sync or async) is truthy; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


async def consumer_settled(js: Any, stream: str, durable: str) -> bool:
    """True when a durable consumer has nothing pending and nothing unacknowledged."""
    info = await js.consumer_info(stream, durable)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)
