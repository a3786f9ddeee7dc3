"""A stop ends every wait at once: the sleep helper, the LISTEN/NOTIFY waker, the outbox relay
and the consumer loop (real Postgres and NATS)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import nats
from mailroom_contracts.streams import ConsumerSpec, StreamSpec
from mailroom_kit import outbox
from mailroom_kit.consumer import consume
from mailroom_kit.db import open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.wake import PgWaker, Stopped, sleep_until_stopped, until_stopped
from psycopg import AsyncConnection

HERE = Path(__file__).parent / "fixture_migrations"
PROMPT = 0.3  # seconds a stop may take once a loop is idle


async def stop_soon(stop: asyncio.Event, after: float = 0.2) -> float:
    """Set `stop` after `after` seconds; return the moment it was set."""
    await asyncio.sleep(after)
    stop.set()
    return time.perf_counter()


async def test_sleep_until_stopped_returns_at_once_on_stop() -> None:
    stop = asyncio.Event()
    assert await sleep_until_stopped(stop, 0.01) is False  # slept the whole time
    setter = asyncio.create_task(stop_soon(stop))
    assert await sleep_until_stopped(stop, 30) is True
    assert time.perf_counter() - await setter < PROMPT
    assert await sleep_until_stopped(stop, 30) is True  # already stopped: no wait at all


async def test_until_stopped_cancels_the_wait_or_passes_the_result() -> None:
    stop = asyncio.Event()
    assert await until_stopped(stop, asyncio.sleep(0, result=7)) == 7
    never = asyncio.get_running_loop().create_future()
    setter = asyncio.create_task(stop_soon(stop))
    try:
        await until_stopped(stop, never)
    except Stopped:
        pass
    assert never.cancelled() and time.perf_counter() - await setter < PROMPT


async def test_pg_waker_wakes_on_notify_and_stops_at_once(database_url: str) -> None:
    channel = f"mailroom_test_{secrets.token_hex(3)}"
    stop = asyncio.Event()
    async with PgWaker(database_url, channel, stop=stop) as waker:
        waker.clear()
        assert await waker.wait(0.05) is False  # nothing happened: the poll timeout
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            started = time.perf_counter()
            await conn.execute("SELECT pg_notify(%s, '')", (channel,))
            assert await waker.wait(5) is True
            assert time.perf_counter() - started < 1
        waker.clear()
        waker.set()  # an in-process wake-up
        assert await waker.wait(5) is True
        waker.clear()
        setter = asyncio.create_task(stop_soon(stop))
        assert await waker.wait(30) is True
        assert time.perf_counter() - await setter < PROMPT


async def test_outbox_relay_stops_promptly_when_idle(database_url: str, nats_url: str) -> None:
    schema = f"kit_{secrets.token_hex(3)}"
    await migrate(database_url, schema, HERE)
    pool = await open_pool(database_url, schema)
    nc = await nats.connect(nats_url)
    relay = outbox.OutboxRelay(pool, nc.jetstream(), url=database_url, schema=schema, idle_poll_seconds=30)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    stopped_at = await stop_soon(stop, 0.3)
    await asyncio.wait_for(task, 5)
    assert time.perf_counter() - stopped_at < PROMPT
    await nc.close()
    await pool.close()


async def test_consumer_stops_promptly_when_idle(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    prefix = f"w{secrets.token_hex(4)}"
    stream = StreamSpec(name=prefix.upper(), subjects=[f"{prefix}.>"], description="t")
    spec = ConsumerSpec(durable="idle", stream=stream.name, filter_subjects=[f"{prefix}.>"], description="t")
    await reconcile(js, [stream], [spec])

    async def handler(event, msg) -> None:  # type: ignore[no-untyped-def]
        raise AssertionError("nothing was published")

    stop = asyncio.Event()
    task = asyncio.create_task(consume(js, spec, handler, stop=stop))
    stopped_at = await stop_soon(stop, 0.3)  # mid-fetch (the fetch waits up to 1 s)
    await asyncio.wait_for(task, 5)
    assert time.perf_counter() - stopped_at < PROMPT
    await js.delete_stream(stream.name)
    await nc.close()
