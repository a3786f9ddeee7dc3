"""Migration runner, outbox relay, reconciler and consumer loop against real Postgres and NATS."""

import asyncio
import secrets
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import pytest
from mailroom_contracts import encode
from mailroom_contracts.events import EmailDelivered, EmailSent
from mailroom_contracts.rpc import GetWebhookRequest, WebhookReply
from mailroom_contracts.streams import DLQ_STREAM, ConsumerSpec, StreamSpec
from mailroom_kit import outbox, rpc
from mailroom_kit.consumer import Permanent, Retry, consume, handle_message
from mailroom_kit.db import connect, open_pool
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import KIT_MIGRATIONS, migrate, pending
from nats.js.errors import NotFoundError

HERE = Path(__file__).parent / "fixture_migrations"


def sent_event(n: int = 0) -> EmailSent:
    return EmailSent(
        event_id=f"evt_{secrets.token_hex(8)}",
        occurred_at=datetime.now(UTC),
        tenant_id="ten_1",
        email_id=f"msg_{n}",
        provider="ses",
        provider_message_id=f"pm-{n}",
    )


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}".upper()


async def test_migrations_apply_once_and_concurrently(database_url: str) -> None:
    schema = f"kit_{secrets.token_hex(3)}"
    results = await asyncio.gather(*(migrate(database_url, schema, HERE) for _ in range(4)))
    applied = [r for r in results if r]
    kit = [f"kit:{f.stem}" for f in sorted(KIT_MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))]
    assert (
        kit[0] == "kit:0001_kit_outbox_inbox"
        and "kit:0002_outbox_not_before" in kit
        and "kit:0003_inbox_retention" in kit
    )
    assert len(applied) == 1 and applied[0] == [*kit, "svc:0001_things"]
    assert await migrate(database_url, schema, HERE) == []
    async with await connect(database_url, schema) as conn:
        assert await pending(conn, schema, HERE) == []
        await conn.execute("INSERT INTO things VALUES ('a')")


async def test_pending_reports_unmigrated_schema(database_url: str) -> None:
    async with await connect(database_url, "nothing_here") as conn:
        assert await pending(conn, "nothing_here", HERE) != []


async def test_relay_publishes_committed_events_once_with_msg_id(database_url: str, nats_url: str) -> None:
    schema = f"kit_{secrets.token_hex(3)}"
    await migrate(database_url, schema, HERE)
    stream = StreamSpec(name=unique("S"), subjects=["mailroom.email.>"], description="t")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    # Another test's stream may own mailroom.email.> on this server; use a private server-side
    # subject space by deleting any overlapping stream first.
    for info in await js.streams_info():
        if "mailroom.email.>" in (info.config.subjects or []):
            assert info.config.name is not None
            await js.delete_stream(info.config.name)
    await reconcile(js, [stream], [])
    pool = await open_pool(database_url, schema)
    committed, rolled_back = sent_event(1), sent_event(2)
    async with pool.connection() as conn:
        async with conn.transaction():
            await outbox.add(conn, committed, schema=schema)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await outbox.add(conn, rolled_back, schema=schema)
                raise RuntimeError("boom")
    relay = outbox.OutboxRelay(pool, js, url=database_url, schema=schema)
    assert await relay.relay_once() == 1
    assert await relay.relay_once() == 0
    # A crash between publish and delete republishes: JetStream drops the duplicate.
    ack = await js.publish("mailroom.email.sent", encode(committed), headers={"Nats-Msg-Id": committed.event_id})
    assert ack.duplicate
    info = await js.stream_info(stream.name)
    assert info.state.messages == 1
    msg = await js.get_msg(stream.name, 1)
    assert msg.headers and msg.headers["Nats-Msg-Id"] == committed.event_id
    # The running relay is woken by NOTIFY well before its 5 s poll.
    stop = asyncio.Event()
    relay_slow = outbox.OutboxRelay(pool, js, url=database_url, schema=schema, idle_poll_seconds=5)
    task = asyncio.create_task(relay_slow.run(stop))
    await asyncio.sleep(0.3)
    async with pool.connection() as conn, conn.transaction():
        await outbox.add(conn, sent_event(3), schema=schema)
    for _ in range(40):
        if (await js.stream_info(stream.name)).state.messages == 2:
            break
        await asyncio.sleep(0.05)
    assert (await js.stream_info(stream.name)).state.messages == 2
    stop.set()
    await asyncio.wait_for(task, 7)
    await js.delete_stream(stream.name)
    await pool.close()
    await nc.close()


async def test_reconcile_creates_and_updates(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = unique("R")
    subj = f"recon.{secrets.token_hex(3)}"
    spec = StreamSpec(
        name=name, subjects=[f"{subj}.>"], description="one", max_age_seconds=3600, duplicate_window_seconds=60
    )
    cons = ConsumerSpec(durable="c1", stream=name, filter_subjects=[f"{subj}.a"], description="x", ack_wait_seconds=5)
    await reconcile(js, [spec], [cons])
    spec2 = msgspec.structs.replace(spec, description="two", max_age_seconds=7200)
    cons2 = msgspec.structs.replace(cons, ack_wait_seconds=9, max_ack_pending=7)
    await reconcile(js, [spec2], [cons2])
    info = await js.stream_info(name)
    assert info.config.description == "two" and info.config.max_age == 7200
    cinfo = await js.consumer_info(name, "c1")
    assert cinfo.config.ack_wait == 9 and cinfo.config.max_ack_pending == 7
    await js.delete_stream(name)
    with pytest.raises(NotFoundError):
        await js.stream_info(name)
    await nc.close()


async def test_consumer_acks_naks_and_terms_explicitly(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = unique("C")
    for info in await js.streams_info():
        if "mailroom.email.>" in (info.config.subjects or []):
            assert info.config.name is not None
            await js.delete_stream(info.config.name)
    # Permanent and undecodable messages are dead-lettered: the contracts' DLQ stream must exist.
    await reconcile(js, [StreamSpec(name=name, subjects=["mailroom.email.>"], description="t"), DLQ_STREAM], [])
    spec = ConsumerSpec(
        durable="t", stream=name, filter_subjects=["mailroom.email.>"], description="t", ack_wait_seconds=2
    )
    await reconcile(js, [], [spec])
    ok, flaky, doomed = sent_event(1), sent_event(2), sent_event(3)
    seen: dict[str, int] = {}

    async def handler(event, msg) -> None:  # type: ignore[no-untyped-def]
        seen[event.email_id] = seen.get(event.email_id, 0) + 1
        if event.email_id == "msg_2" and seen["msg_2"] < 3:
            raise Retry("not yet", delay=0.1)
        if event.email_id == "msg_3":
            raise Permanent("never")

    for ev in (ok, flaky, doomed):
        await js.publish("mailroom.email.sent", encode(ev), headers={"Nats-Msg-Id": ev.event_id})
    await js.publish("mailroom.email.sent", b"{not json")
    stop = asyncio.Event()
    task = asyncio.create_task(consume(js, spec, handler, stop=stop, concurrency=4))
    for _ in range(100):
        if seen.get("msg_2") == 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert seen == {"msg_1": 1, "msg_2": 3, "msg_3": 1}
    cinfo = await js.consumer_info(name, "t")
    assert cinfo.num_pending == 0 and cinfo.num_ack_pending == 0 and cinfo.num_redelivered == 0
    await js.delete_stream(name)
    await nc.close()


async def test_unexpected_exception_is_retried_not_dropped(nats_url: str) -> None:
    class FakeMsg:
        data = encode(sent_event(9))
        subject = "mailroom.email.sent"

        class metadata:
            num_delivered = 1

        def __init__(self) -> None:
            self.calls: list[tuple[str, float | None]] = []

        async def ack(self) -> None:
            self.calls.append(("ack", None))

        async def nak(self, delay: float | None = None) -> None:
            self.calls.append(("nak", delay))

        async def term(self) -> None:
            self.calls.append(("term", None))

        async def in_progress(self) -> None:
            pass

    async def boom(event, msg) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("db down")

    msg = FakeMsg()
    spec = ConsumerSpec(durable="x", stream="X", filter_subjects=["a"], description="")
    assert await handle_message(spec, boom, msg) == "error"  # type: ignore[arg-type]
    assert msg.calls == [("nak", 0.5)]


async def test_rpc_round_trip_and_unavailable(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    subject = f"rpc.test.{secrets.token_hex(3)}"

    async def handler(req: GetWebhookRequest) -> WebhookReply:
        return WebhookReply()

    await rpc.serve(nc, subject, GetWebhookRequest, handler, queue="q")
    reply = await rpc.request(nc, subject, GetWebhookRequest(tenant_id="t", webhook_id="w"), WebhookReply)
    assert reply.endpoint is None and reply.error is None
    bad = await nc.request(subject, b"[]", timeout=2)
    assert msgspec.json.decode(bad.data)["error"]["code"] == "validation_error"
    with pytest.raises(rpc.RpcUnavailable):
        await rpc.request(
            nc, f"{subject}.nobody", GetWebhookRequest(tenant_id="t", webhook_id="w"), WebhookReply, timeout=0.5
        )
    await nc.close()


def test_delivered_event_round_trips() -> None:
    ev = EmailDelivered(
        event_id="evt_1", occurred_at=datetime.now(UTC), tenant_id="t", email_id="m", recipients=["a@b.c"]
    )
    assert msgspec.json.decode(encode(ev), type=EmailDelivered) == ev
