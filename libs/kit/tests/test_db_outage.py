"""The pool through a real Postgres outage: a private pgserver (never the machine's shared
server) is stopped and started under a pool. Waits are bounded, the first checkout after
recovery works, and so does the first one after a restart the pool slept through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import psycopg
import pytest
from mailroom_devstack.infra import Postgres
from mailroom_kit.db import DEFAULT_POOL_TIMEOUT_SECONDS, Pool, open_pool
from mailroom_kit.settings import BaseSettings
from psycopg_pool import PoolTimeout

OUTAGE_ERRORS = (psycopg.OperationalError, PoolTimeout)


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    pg = Postgres(tmp_path_factory.mktemp("outage") / "pg").start()
    yield pg
    pg.stop()


def restart(pg: Postgres) -> None:
    url = pg.admin_url
    pg.start()
    assert pg.admin_url == url  # same data directory, same socket: the pool's URL still points at it


async def select_one(pool: Pool) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT 1 AS one")).fetchone()
        assert row is not None
        return int(row["one"])


async def timed_failure(pool: Pool) -> float:
    t0 = time.monotonic()
    with pytest.raises(OUTAGE_ERRORS):
        await select_one(pool)
    return time.monotonic() - t0


def test_the_shared_setting_and_the_pool_default_agree() -> None:
    assert BaseSettings().db_pool_timeout_seconds == DEFAULT_POOL_TIMEOUT_SECONDS
    assert BaseSettings.env_name("db_pool_timeout_seconds") == "MAILROOM_DB_POOL_TIMEOUT_SECONDS"
    assert BaseSettings.from_env({"MAILROOM_DB_POOL_TIMEOUT_SECONDS": "0.5"}).db_pool_timeout_seconds == 0.5


async def test_outage_fails_within_the_wait_and_the_first_checkout_after_recovery_works(
    private_pg: Postgres,
) -> None:
    pool = await open_pool(private_pg.url_for("postgres"), "public", min_size=2, max_size=4)
    try:
        assert await asyncio.gather(*(select_one(pool) for _ in range(4))) == [1, 1, 1, 1]
        private_pg.stop()
        # Idle connections the server closed, then no server at all: every wait is bounded.
        # Keep asking for a while, so psycopg's reconnection backoff (1 s, 2 s, 4 s, …) would
        # have grown past the wait if the pool still used it.
        waits = []
        until = time.monotonic() + 8
        while time.monotonic() < until:
            waits.append(await timed_failure(pool))
        assert max(waits) < DEFAULT_POOL_TIMEOUT_SECONDS + 0.5, waits
        restart(private_pg)
        t0 = time.monotonic()
        assert await select_one(pool) == 1
        first = time.monotonic() - t0
        assert first < DEFAULT_POOL_TIMEOUT_SECONDS, first
        assert await asyncio.gather(*(select_one(pool) for _ in range(8))) == [1] * 8
    finally:
        await pool.close()


async def test_a_restart_while_idle_costs_the_next_checkout_nothing(private_pg: Postgres) -> None:
    pool = await open_pool(private_pg.url_for("postgres"), "public", min_size=4, max_size=4)
    try:
        assert await asyncio.gather(*(select_one(pool) for _ in range(4))) == [1] * 4
        private_pg.stop()
        restart(private_pg)  # every idle connection in the pool is now closed by the server
        t0 = time.monotonic()
        assert await asyncio.gather(*(select_one(pool) for _ in range(4))) == [1] * 4
        assert time.monotonic() - t0 < DEFAULT_POOL_TIMEOUT_SECONDS
    finally:
        await pool.close()


async def test_open_pool_bounds_the_wait_it_is_given(private_pg: Postgres) -> None:
    pool = await open_pool(private_pg.url_for("postgres"), "public", min_size=1, max_size=1, timeout=0.3)
    try:
        async with pool.connection():
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout):
                await select_one(pool)  # the only connection is busy
            assert 0.25 < time.monotonic() - t0 < 0.8
        assert await select_one(pool) == 1
    finally:
        await pool.close()
