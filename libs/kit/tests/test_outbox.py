"""The outbox relay's windows against real Postgres and a real nats-server, seen through a TCP
proxy that can delay or hold what the server sends back (its acks): a row is deleted only
once its publish was acknowledged, and a window costs a few round trips, not one per row."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import nats
import pytest
from mailroom_contracts.streams import StreamSpec
from mailroom_kit import outbox
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.wake import StreamLinger
from nats.js import JetStreamContext

FIXTURE_MIGRATIONS = Path(__file__).parent / "fixture_migrations"


class AckProxy:
    """Forwards a TCP connection; what the server sends back arrives `delay` seconds late
    (a fixed latency, not a cumulative one) and not at all while `hold()` is in effect."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        parsed = urlparse(upstream)
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 4222
        self.delay = delay
        self._released = asyncio.Event()
        self._released.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> AckProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"nats://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def hold(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(self._host, self._port)
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        for coro in (
            self._pipe(client_r, server_w),
            self._read_back(server_r, queue),
            self._write_back(queue, client_w),
        ):
            task = asyncio.create_task(coro)
            self._tasks.add(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    @staticmethod
    async def _read_back(reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        while data := await reader.read(65536):
            queue.put_nowait((loop.time(), data))

    async def _write_back(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            received_at, data = await queue.get()
            await asyncio.sleep(max(0.0, received_at + self.delay - loop.time()))
            await self._released.wait()
            writer.write(data)
            await writer.drain()


class Setup:
    def __init__(self, pool: Pool, js: JetStreamContext, stream: str, subject: str, url: str, schema: str) -> None:
        self.pool, self.js, self.stream, self.subject, self.url, self.schema = pool, js, stream, subject, url, schema

    async def add_rows(self, n: int, *, subject: str | None = None) -> list[str]:
        """`n` outbox rows on `subject` (the stream's by default); their event ids in id order."""
        ids = [f"evt_{secrets.token_hex(8)}" for _ in range(n)]
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO outbox (event_id, subject, payload) VALUES (%s, %s, %s)",
                    [(event_id, subject or self.subject, event_id.encode()) for event_id in ids],
                )
        return ids

    async def outbox_ids(self) -> list[str]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute("SELECT event_id FROM outbox ORDER BY id")).fetchall()
        return [r["event_id"] for r in rows]

    async def stored_ids(self) -> list[str]:
        """Nats-Msg-Id of every message in the stream, in stream order."""
        info = await self.js.stream_info(self.stream)
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await self.js.get_msg(self.stream, seq)
            assert msg.headers is not None
            ids.append(msg.headers["Nats-Msg-Id"])
        return ids


@pytest.fixture
async def setup(database_url: str, nats_url: str) -> AsyncIterator[Setup]:
    schema = f"relay_{secrets.token_hex(3)}"
    await migrate(database_url, schema, FIXTURE_MIGRATIONS)
    subject_space = f"relaytest.{secrets.token_hex(3)}"
    stream = f"RELAY_{secrets.token_hex(3)}".upper()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await reconcile(js, [StreamSpec(name=stream, subjects=[f"{subject_space}.>"], description="relay test")], [])
    pool = await open_pool(database_url, schema)
    yield Setup(pool, js, stream, f"{subject_space}.event", database_url, schema)
    await js.delete_stream(stream)
    await pool.close()
    await nc.close()


async def test_rows_stay_until_their_acks_arrive(setup: Setup, nats_url: str) -> None:
    ids = await setup.add_rows(10)
    async with AckProxy(nats_url) as proxy:
        nc = await nats.connect(proxy.url)
        relay = outbox.OutboxRelay(
            setup.pool, nc.jetstream(), url=setup.url, schema=setup.schema, ack_timeout_seconds=0.5
        )
        proxy.hold()  # NATS stores the messages, but no ack comes back (NATS lost mid-window)
        with pytest.raises(outbox.RelayIncomplete) as failed:
            await relay.relay_once()
        assert (failed.value.relayed, failed.value.failed) == (0, 10)
        assert await setup.outbox_ids() == ids  # nothing deleted without its ack
        assert await setup.stored_ids() == ids  # ... although JetStream has them
        proxy.release()
        assert await relay.relay_once() == 10  # republished: JetStream acks the duplicates
        assert await relay.relay_once() == 0
        await nc.close()
    assert await setup.outbox_ids() == []
    assert await setup.stored_ids() == ids  # once each, in outbox order


async def test_a_failed_publish_keeps_only_its_own_row(setup: Setup) -> None:
    first = await setup.add_rows(3)
    nowhere = await setup.add_rows(2, subject=f"relaytest.nostream.{secrets.token_hex(3)}")
    last = await setup.add_rows(3)
    relay = outbox.OutboxRelay(setup.pool, setup.js, url=setup.url, schema=setup.schema)
    with pytest.raises(outbox.RelayIncomplete) as failed:
        await relay.relay_once()  # no stream takes the middle two: JetStream answers "no responders"
    assert (failed.value.relayed, failed.value.failed) == (6, 2)
    assert await setup.outbox_ids() == nowhere  # retried by the next window
    assert await setup.stored_ids() == first + last


async def test_a_window_costs_a_few_round_trips_not_one_per_row(setup: Setup, nats_url: str) -> None:
    rows, delay = 600, 0.05
    ids = await setup.add_rows(rows)
    async with AckProxy(nats_url, delay=delay) as proxy:
        nc = await nats.connect(proxy.url)
        relay = outbox.OutboxRelay(setup.pool, nc.jetstream(), url=setup.url, schema=setup.schema, batch_size=256)
        windows, started = [], time.monotonic()
        while relayed := await relay.relay_once():
            windows.append(relayed)
        elapsed = time.monotonic() - started
        await nc.close()
    assert windows == [256, 256, 88]  # three transactions, one DELETE each
    # Awaiting each ack before the next publish would take rows x delay = 30 s; a window is
    # about one delayed round trip (the first also subscribes the ack inbox).
    assert elapsed < 20 * delay, elapsed
    assert await setup.outbox_ids() == []
    assert await setup.stored_ids() == ids  # the stream holds them in outbox order


def test_window_is_bounded() -> None:
    with pytest.raises(ValueError):
        outbox.OutboxRelay(None, None, url="", schema="s", batch_size=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        outbox.OutboxRelay(None, None, url="", schema="s", batch_size=5000)  # type: ignore[arg-type]


class CountingRelay(outbox.OutboxRelay):
    """The relay, counting its immediate windows (each a transaction: BEGIN, SELECT, COMMIT at least)."""

    windows = 0

    async def relay_once(self) -> int:
        self.windows += 1
        return await super().relay_once()


async def test_a_window_that_was_not_full_is_not_followed_by_an_empty_one(setup: Setup) -> None:
    # issue 15: under a steady stream of accepts every wake-up relayed a few rows, then looked
    # again and found none: half the relay's transactions were empty.
    relay = CountingRelay(
        setup.pool, setup.js, url=setup.url, schema=setup.schema, batch_size=4, schedule_check_seconds=30
    )  # (no scheduled rows here: their look every 0.25 s after a wake-up would add windows)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))

    async def notified(n: int) -> tuple[list[str], float]:
        """`n` rows and their NOTIFY (as a writer sends it); their ids and how long until relayed."""
        ids = await setup.add_rows(n)
        async with setup.pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, '')", (outbox.channel(setup.schema),))
        woken = time.monotonic()
        while await setup.outbox_ids() and time.monotonic() < woken + 5:
            await asyncio.sleep(0.01)
        took = time.monotonic() - woken
        await asyncio.sleep(0.3)  # well within the 1 s poll: any window after the last shows
        return ids, took

    try:
        await asyncio.sleep(0.3)  # started: its first look (and the look once listening) done
        idle = relay.windows
        first, took = await notified(10)
        assert relay.windows - idle == 3  # 4, 4, 2: a full window is followed at once, the last is not
        assert took < 0.5  # woken by the NOTIFY, not the poll
        more, took = await notified(2)
        assert relay.windows - idle == 4 and took < 0.5
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert await setup.outbox_ids() == []
    assert await setup.stored_ids() == first + more


async def test_a_stream_of_commits_is_relayed_in_shared_windows_and_a_lone_one_at_once(setup: Setup) -> None:
    # issue 15: a window costs four statements and a round of acks whatever its size; under a
    # stream of small commits the relay waits `linger_seconds` so one window takes several.
    relay = CountingRelay(
        setup.pool,
        setup.js,
        url=setup.url,
        schema=setup.schema,
        schedule_check_seconds=30,
        linger_seconds=0.3,  # exaggerated, so the test cannot pass by timing luck
        stream_gap_seconds=0.5,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))

    async def commit(n: int) -> list[str]:
        ids = await setup.add_rows(n)
        async with setup.pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, '')", (outbox.channel(setup.schema),))
        return ids

    async def relayed_within(seconds: float) -> float:
        started = time.monotonic()
        while await setup.outbox_ids() and time.monotonic() < started + seconds:
            await asyncio.sleep(0.005)
        assert await setup.outbox_ids() == []
        return time.monotonic() - started

    try:
        await asyncio.sleep(0.8)  # started, and quiet for longer than the stream gap
        before = relay.windows
        lone = await commit(1)
        assert await relayed_within(2) < 0.25  # after a quiet spell: at once, no linger
        assert relay.windows - before == 1
        stream = await commit(1)  # right after that window: a stream
        await asyncio.sleep(0.1)
        stream += await commit(2)
        took = await relayed_within(3)
        assert relay.windows - before == 2  # the three rows of two commits in one window
        assert took > 0.1  # (the second commit came 0.1 s in: the window waited for it)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert await setup.stored_ids() == lone + stream


def test_a_relay_lingers_only_inside_a_stream() -> None:
    relay = StreamLinger(linger_seconds=0.01, stream_gap_seconds=0.05)
    off = StreamLinger(linger_seconds=0)

    now = time.monotonic()
    relay.busy(now - 0.01)
    assert relay.streaming()
    relay.busy(now - 0.2)
    assert not relay.streaming()
    off.busy()
    assert not off.streaming()
