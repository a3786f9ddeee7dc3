"""Batch mode (`consume_batches`) against real NATS JetStream and Postgres: a fetch applied in one
transaction, duplicates applied once, a failing batch that commits nothing and falls back to one
message at a time (a poison message dead-lettered, a flaky one retried, the rest applied), and a
kill -9 between the commit and the acks (the redelivery applies nothing twice)."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from mailroom_contracts import decode_event, encode
from mailroom_contracts.events import EmailSent, Event
from mailroom_devstack.infra import spawn
from mailroom_devstack.pytest_plugin import consumer_settled, eventually
from mailroom_kit import dlq, inbox
from mailroom_kit.consumer import BatchItem, Bulk, Permanent, consume, consume_batches
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.migrations import migrate
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).parent))

from batch_consumer import batch_handler
from kit_testkit import Space, sent

HERE = Path(__file__).parent


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def schema(database_url: str) -> str:
    name = f"kitb_{msgspec.json.encode(id(object())).decode()[-6:]}"
    await migrate(database_url, name, HERE / "fixture_migrations")
    pool = await open_pool(database_url, name)
    async with pool.connection() as conn:
        # No unique key on purpose: an effect applied twice shows up as two rows.
        await conn.execute("CREATE TABLE IF NOT EXISTS effects (event_id text NOT NULL, batch int NOT NULL)")
        await conn.execute("CREATE TABLE IF NOT EXISTS seen (event_id text NOT NULL, delivery int NOT NULL)")
        await conn.execute("TRUNCATE effects, seen, inbox")
    await pool.close()
    return name


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[Pool]:
    p = await open_pool(database_url, schema)
    yield p
    await p.close()


async def rows(pool: Pool, sql: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(sql)
        return await cur.fetchall()


async def effect_counts(pool: Pool) -> collections.Counter[str]:
    return collections.Counter(r["event_id"] for r in await rows(pool, "SELECT event_id FROM effects"))


def handled(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "message.handled"]


async def run_until_settled(js: JetStreamContext, spec: Any, handler: Any, timeout: float = 20) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consume_batches(js, spec, handler, stop=stop, max_batch=50))
    try:
        await eventually(lambda: consumer_settled(js, spec.stream, spec.durable), timeout=timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_fetch_is_one_transaction_and_a_duplicate_event_id_is_applied_once(
    js: JetStreamContext, pool: Pool
) -> None:
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        events = [sent(i) for i in range(30)]
        twice, applied_before = events[5], events[7]
        for event in events:
            await space.publish("email.sent", encode(event), event.event_id)
        # The same event id in a second stream message (a republish past the duplicate window).
        await space.publish("email.sent", encode(twice), f"again-{twice.event_id}")
        async with pool.connection() as conn:
            assert await inbox.claim(conn, spec.durable, applied_before.event_id)
        calls: list[int] = []
        apply = batch_handler(pool, spec)

        async def handler(items: list[BatchItem]) -> None:
            calls.append(len(items))
            await apply(items)

        with capture_logs() as logs:
            await run_until_settled(js, spec, handler)
        counts = await effect_counts(pool)
        assert counts == {e.event_id: 1 for e in events if e is not applied_before}
        assert sum(calls) == 31 and max(calls) > 1, calls  # batches, not one message each
        [batch_sizes] = [{r["batch"] for r in await rows(pool, "SELECT DISTINCT batch FROM effects")}]
        assert max(batch_sizes) > 1
        lines = handled(logs)
        assert len(lines) == 31 and {line["outcome"] for line in lines} == {"ack"}
        assert all(line["batch"] > 1 for line in lines if "batch" in line) and any("batch" in line for line in lines)
        assert {line["event_id"] for line in lines} == {e.event_id for e in events}


async def test_a_failing_batch_commits_nothing_then_each_message_goes_alone(js: JetStreamContext, pool: Pool) -> None:
    """The batch transaction fails mid-way (after writing): nothing of it stays. Each message is
    then applied alone: the poison one is dead-lettered, a flaky one retried, the rest applied."""
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        events = [sent(i) for i in range(10)]
        poison, flaky = events[3], events[6]
        for event in events:
            await space.publish("email.sent", encode(event), event.event_id)

        async def handler(items: list[BatchItem]) -> None:
            ids = [it.event.event_id for it in items]
            async with pool.connection() as conn, conn.transaction():
                claimed = await inbox.claim_many(conn, spec.durable, ids)
                await conn.execute(
                    "INSERT INTO effects (event_id, batch) SELECT unnest(%s::text[]), %s", (sorted(claimed), len(items))
                )
                if poison.event_id in ids:
                    raise Permanent("this snapshot can never be applied")
                if any(it.event.event_id == flaky.event_id and it.delivery == 1 for it in items):
                    raise RuntimeError("connection reset")
            for it in items:
                it.note(result="applied")

        with capture_logs() as logs:
            await run_until_settled(js, spec, handler)
        counts = await effect_counts(pool)
        assert counts == {e.event_id: 1 for e in events if e is not poison}
        # Everything was applied alone: none of the failed batch's writes survived.
        assert [r["batch"] for r in await rows(pool, "SELECT DISTINCT batch FROM effects")] == [1]
        [letter] = await dlq.list_dead_letters(js, consumer=spec.durable)
        assert letter.letter.reason == "permanent" and letter.letter.event_id == poison.event_id
        await js.delete_msg("MAILROOM_DLQ", letter.seq)
        assert [line["batch"] for line in logs if line["event"] == "consumer.batch_failed"] == [10]
        by_event = collections.defaultdict(list)
        for line in handled(logs):
            by_event[line["event_id"]].append(line["outcome"])
        assert by_event.pop(poison.event_id) == ["dead_lettered"]
        assert by_event.pop(flaky.event_id) == ["error", "ack"]
        assert by_event == {e.event_id: ["ack"] for e in events if e not in (poison, flaky)}


async def test_items_the_handler_marks_are_settled_as_marked(js: JetStreamContext, pool: Pool) -> None:
    """`item.retry` (nothing claimed for it) naks that one message; the batch's others are acked."""
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        events = [sent(i) for i in range(8)]
        late = events[2]
        for event in events:
            await space.publish("email.sent", encode(event), event.event_id)
        apply = batch_handler(pool, spec)

        async def handler(items: list[BatchItem]) -> None:
            ready = []
            for it in items:
                if it.event.event_id == late.event_id and it.delivery == 1:
                    it.retry("not yet", delay=0.1)
                else:
                    ready.append(it)
            if ready:
                await apply(ready)

        with capture_logs() as logs:
            await run_until_settled(js, spec, handler)
        assert await effect_counts(pool) == {e.event_id: 1 for e in events}
        outcomes = [(line["event_id"], line["outcome"]) for line in handled(logs)]
        assert outcomes.count((late.event_id, "retry")) == 1 and outcomes.count((late.event_id, "ack")) == 1
        assert len(outcomes) == 9


async def test_kill_9_between_commit_and_ack_redelivers_and_applies_nothing_twice(
    js: JetStreamContext, pool: Pool, nats_url: str, database_url: str, schema: str
) -> None:
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")  # ack_wait 5 s
        await reconcile(js, [], [spec])
        events: list[EmailSent] = [sent(i) for i in range(20)]
        for event in events:
            await space.publish("email.sent", encode(event), event.event_id)
        args = [sys.executable, str(HERE / "batch_consumer.py"), msgspec.json.encode(spec).decode()]
        args += [nats_url, database_url, schema]
        crashing = spawn([*args, "--kill-after-commit"])
        assert await asyncio.to_thread(crashing.wait, 30) == -signal.SIGKILL
        first = await rows(pool, "SELECT event_id FROM seen")
        assert first and len(first) == len(await rows(pool, "SELECT event_id FROM effects"))  # committed
        info = await js.consumer_info(spec.stream, spec.durable)
        assert info.num_ack_pending == len(first)  # … and not one of them acked

        again = spawn(args)
        try:
            await eventually(lambda: consumer_settled(js, spec.stream, spec.durable), timeout=30)
        finally:
            again.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(again.wait, 15)
            except subprocess.TimeoutExpired:
                again.kill()
        assert await effect_counts(pool) == {e.event_id: 1 for e in events}
        redelivered = {r["event_id"] for r in await rows(pool, "SELECT event_id FROM seen WHERE delivery > 1")}
        assert redelivered == {r["event_id"] for r in first}  # handed over again, applied nothing


async def test_a_lost_database_connection_naks_the_batch_at_once_and_it_comes_back_whole(
    js: JetStreamContext, pool: Pool
) -> None:
    """The batch's connection dies mid-transaction (the server terminates it): no message is to
    blame, so none is tried alone; all are nak'd and applied when they come back."""
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        events = [sent(i) for i in range(6)]
        for event in events:
            await space.publish("email.sent", encode(event), event.event_id)
        apply = batch_handler(pool, spec)
        calls: list[int] = []

        async def handler(items: list[BatchItem]) -> None:
            calls.append(len(items))
            if len(calls) == 1:
                async with pool.connection() as conn, conn.transaction():
                    await inbox.claim_many(conn, spec.durable, [it.event.event_id for it in items])
                    await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            await apply(items)

        with capture_logs() as logs:
            await run_until_settled(js, spec, handler)
        assert await effect_counts(pool) == {e.event_id: 1 for e in events}
        assert calls[0] == 6 and sum(calls) == 12 and 1 not in calls, calls
        assert not [line for line in logs if line["event"] == "consumer.batch_failed"]
        outcomes = [line["outcome"] for line in handled(logs)]
        assert sorted(outcomes) == ["ack"] * 6 + ["error"] * 6


async def test_consume_with_bulk_applies_what_take_picks_together_and_the_rest_one_by_one(
    js: JetStreamContext, pool: Pool
) -> None:
    """`consume(..., bulk=Bulk(...))` (issue 23): of one fetch, the messages `take` picks go to the
    batch handler together (one call, then acked); the others, and a taken one the batch handler
    hands back (`item.retry`), go to the per-message handler, each once more."""
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        events = [sent(i) for i in range(60)]
        for event in events:
            await space.publish("email.sent", encode(event), event.event_id)
        odd = {e.event_id for i, e in enumerate(events) if i % 2}
        handed_back = events[1].event_id
        apply = batch_handler(pool, spec)
        batches: list[int] = []
        alone: list[str] = []
        frees: list[int] = []

        def take(msgs: list[Msg], free: int) -> list[Msg]:
            frees.append(free)
            return [m for m in msgs if m.metadata.num_delivered == 1 and decode_event(m.data).event_id in odd]

        async def bulk_handler(items: list[BatchItem]) -> None:
            batches.append(len(items))
            keep = [it for it in items if it.event.event_id != handed_back]
            for it in items:
                if it.event.event_id == handed_back:
                    it.retry("handed back", delay=0)
            await apply(keep)

        async def one(event: Event, msg: Msg) -> None:
            alone.append(event.event_id)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("INSERT INTO effects (event_id, batch) VALUES (%s, 0)", (event.event_id,))

        stop = asyncio.Event()
        task = asyncio.create_task(
            consume(js, spec, one, stop=stop, concurrency=4, bulk=Bulk(bulk_handler, take, fetch=100))
        )
        try:
            await eventually(lambda: consumer_settled(js, spec.stream, spec.durable), timeout=20)
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        assert await effect_counts(pool) == {e.event_id: 1 for e in events}
        assert max(batches) > 4, batches  # more than the 4 per-message slots, in one call
        assert sorted(alone) == sorted({e.event_id for e in events} - odd | {handed_back})
        effects = await rows(pool, "SELECT event_id, batch FROM effects")
        assert all((r["batch"] > 0) == (r["event_id"] in odd - {handed_back}) for r in effects)
        assert max(frees) <= 4
