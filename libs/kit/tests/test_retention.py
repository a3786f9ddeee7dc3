"""The retention job: old rows go batch by batch, recent ones stay, 0 keeps everything, the worker
runs each purge and stops at once; the inbox retention cannot be set shorter than the stream's age."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mailroom_kit import inbox
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.migrations import migrate
from mailroom_kit.retention import Purge, purge_once, retention_worker
from mailroom_kit.settings import DAY, BaseSettings, SettingsError

FIXTURE_MIGRATIONS = Path(__file__).parent / "fixture_migrations"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    schema = f"retention_{secrets.token_hex(3)}"
    await migrate(database_url, schema, FIXTURE_MIGRATIONS)
    p = await open_pool(database_url, schema)
    yield p
    async with p.connection() as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.commit()
    await p.close()


async def add_claims(pool: Pool, ages_days: list[float]) -> None:
    async with pool.connection() as conn, conn.transaction():
        for age in ages_days:
            await conn.execute(
                "INSERT INTO inbox (consumer, event_id, processed_at)"
                " VALUES ('c', %s, now() - make_interval(secs => %s))",
                (f"evt_{secrets.token_hex(6)}", age * DAY),
            )


async def claim_ages(pool: Pool) -> list[float]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT round(extract(epoch FROM now() - processed_at) / 86400) AS days FROM inbox ORDER BY processed_at"
        )
        return sorted(float(r["days"]) for r in await cur.fetchall())


INBOX_15_DAYS = Purge("inbox", 15 * DAY, inbox.purge)


async def test_old_rows_go_in_batches_and_recent_ones_stay(pool: Pool) -> None:
    await add_claims(pool, [20, 30, 16, 40, 90, 1, 14, 0])
    deleted = await purge_once(pool, INBOX_15_DAYS, schema="t", batch=2)  # 5 old rows: three batches
    assert deleted == 5
    assert await claim_ages(pool) == [0.0, 1.0, 14.0]
    assert await purge_once(pool, INBOX_15_DAYS, schema="t", batch=2) == 0


async def test_zero_keeps_everything(pool: Pool) -> None:
    await add_claims(pool, [400, 20])
    assert await purge_once(pool, Purge("inbox", 0, inbox.purge), schema="t", batch=10) == 0
    assert await claim_ages(pool) == [20.0, 400.0]


@dataclass
class FakeRuntime:
    """What the worker reads of a Runtime: its pool, schema and stop event."""

    pool: Pool
    schema: str
    stop: asyncio.Event


async def test_worker_runs_every_purge_and_survives_a_failing_one(pool: Pool) -> None:
    await add_claims(pool, [30, 2])
    calls: list[str] = []

    async def broken(conn: Any, cutoff: Any, limit: int) -> int:
        calls.append("broken")
        raise RuntimeError("table is gone")

    rt = FakeRuntime(pool, "t", asyncio.Event())
    worker = retention_worker([Purge("broken", DAY, broken), INBOX_15_DAYS], interval_seconds=3600)
    task = asyncio.create_task(worker(rt))  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        while await claim_ages(pool) != [2.0]:
            await asyncio.sleep(0.05)
    assert calls == ["broken"]
    rt.stop.set()
    async with asyncio.timeout(2):  # sleeping until the next interval, it stops at once
        await task


def test_inbox_retention_below_the_stream_age_is_refused() -> None:
    with pytest.raises(SettingsError, match="MAILROOM_INBOX_RETENTION_DAYS"):
        BaseSettings.from_env({"MAILROOM_INBOX_RETENTION_DAYS": "3"})
    assert BaseSettings.from_env({"MAILROOM_INBOX_RETENTION_DAYS": "0"}).inbox_retention_days == 0
    assert BaseSettings.from_env({"MAILROOM_INBOX_RETENTION_DAYS": "14"}).inbox_retention_days == 14
