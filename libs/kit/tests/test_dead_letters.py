"""Bounded retries, dead letters (publish, list, replay), unknown event types, the one summary
line per message and the inbox claim, against real NATS JetStream and Postgres."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from mailroom_contracts import encode
from mailroom_contracts.events import Event
from mailroom_contracts.streams import ConsumerSpec
from mailroom_devstack.pytest_plugin import consumer_settled, eventually
from mailroom_kit import dlq, inbox
from mailroom_kit.consumer import Permanent, Retry, consume, note
from mailroom_kit.db import connect
from mailroom_kit.metrics import DEAD_LETTERS
from mailroom_kit.migrations import migrate
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).parent))

from kit_testkit import Space, domain_created, sent

HERE = Path(__file__).parent / "fixture_migrations"


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def settled(js: JetStreamContext, spec: ConsumerSpec) -> bool:
    return await consumer_settled(js, spec.stream, spec.durable)


async def test_poison_message_is_dead_lettered_after_max_deliveries_then_replayed(js: JetStreamContext) -> None:
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>", max_deliveries=3)
        await reconcile(js, [], [spec])
        seen: list[str] = []
        broken = True

        async def handler(event: Event, msg: Msg) -> None:
            seen.append(event.event_id)
            if broken:
                raise Retry("downstream not ready", delay=0.05)

        poison, fine = sent(1), sent(2)
        before = DEAD_LETTERS.labels(consumer=spec.durable)._value.get()
        stop = asyncio.Event()
        task = asyncio.create_task(consume(js, spec, handler, stop=stop))
        await space.publish("email.sent", encode(poison), poison.event_id)

        async def dead_lettered() -> bool:
            return len(await dlq.list_dead_letters(js, consumer=spec.durable)) == 1

        await eventually(dead_lettered)
        await eventually(lambda: settled(js, spec))
        assert seen == [poison.event_id] * 3  # exactly max_deliveries attempts, then no more
        [stored] = await dlq.list_dead_letters(js, consumer=spec.durable)
        letter = stored.letter
        assert (letter.consumer, letter.stream, letter.subject) == (
            spec.durable,
            space.stream.name,
            f"{space.prefix}.email.sent",
        )
        assert letter.payload == encode(poison) and letter.event_id == poison.event_id
        assert (letter.reason, letter.deliveries, letter.event_type) == ("exhausted", 3, "email.sent")
        assert "downstream not ready" in letter.error
        assert DEAD_LETTERS.labels(consumer=spec.durable)._value.get() == before + 1
        # The JSON form carries the payload as base64 and round-trips.
        assert msgspec.json.decode(encode(letter), type=type(letter)) == letter
        # Listing by another consumer does not show it; listing all does.
        assert await dlq.list_dead_letters(js, consumer="someone-else") == []
        assert stored.seq in [s.seq for s in await dlq.list_dead_letters(js)]

        # The operator fixes the cause and replays: the handler gets it again and acks it.
        broken = False
        await space.publish("email.sent", encode(fine), fine.event_id)
        await eventually(lambda: fine.event_id in seen)
        replayed = await dlq.replay(js, stored.seq)
        assert replayed.letter == letter
        await eventually(lambda: seen.count(poison.event_id) == 4)
        await eventually(lambda: settled(js, spec))
        assert await dlq.list_dead_letters(js, consumer=spec.durable) == []
        with pytest.raises(LookupError):
            await dlq.replay(js, stored.seq)  # gone once replayed
        stop.set()
        await asyncio.wait_for(task, 1)


async def test_dead_letter_is_stored_once_even_if_published_twice(js: JetStreamContext) -> None:
    """A crash between storing the dead letter and terminating the original re-publishes it on the
    next delivery; the deterministic Nats-Msg-Id keeps one copy."""
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        ev = sent(3)
        await space.publish("email.sent", encode(ev), ev.event_id)
        psub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
        [msg] = await psub.fetch(1, timeout=2)
        letter = dlq.dead_letter_for(spec, msg, reason="permanent", error="bad")
        first = await dlq.publish(js, letter)
        again = await dlq.publish(js, msgspec.structs.replace(letter, deliveries=2))
        assert again.duplicate and again.seq == first.seq
        assert len(await dlq.list_dead_letters(js, consumer=spec.durable)) == 1
        await msg.term()
        await psub.unsubscribe()


async def test_replay_all_of_one_consumer(js: JetStreamContext) -> None:
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        attempts: dict[str, int] = {}

        async def handler(event: Event, msg: Msg) -> None:
            attempts[event.event_id] = attempts.get(event.event_id, 0) + 1
            if attempts[event.event_id] == 1:
                raise Permanent("bad data (first time only)")

        events = [sent(i) for i in range(3)]
        stop = asyncio.Event()
        task = asyncio.create_task(consume(js, spec, handler, stop=stop))
        for ev in events:
            await space.publish("email.sent", encode(ev), ev.event_id)

        async def three() -> bool:
            return len(await dlq.list_dead_letters(js, consumer=spec.durable)) == 3

        await eventually(three)
        replayed = await dlq.replay_all(js, consumer=spec.durable)
        assert [r.letter.event_id for r in replayed] == [ev.event_id for ev in events]
        await eventually(lambda: all(attempts.get(ev.event_id) == 2 for ev in events))
        await eventually(lambda: settled(js, spec))
        assert await dlq.list_dead_letters(js, consumer=spec.durable) == []
        stop.set()
        await asyncio.wait_for(task, 1)


async def test_permanent_is_dead_lettered_at_once_and_logged_at_error(js: JetStreamContext) -> None:
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.sent")
        await reconcile(js, [], [spec])
        calls = 0

        async def handler(event: Event, msg: Msg) -> None:
            nonlocal calls
            calls += 1
            raise Permanent("recipient list is empty")

        ev = sent(4)
        stop = asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(consume(js, spec, handler, stop=stop))
            await space.publish("email.sent", encode(ev), ev.event_id)

            async def one() -> bool:
                return len(await dlq.list_dead_letters(js, consumer=spec.durable)) == 1

            await eventually(one)
            await eventually(lambda: settled(js, spec))
            stop.set()
            await asyncio.wait_for(task, 1)
        assert calls == 1
        [stored] = await dlq.list_dead_letters(js, consumer=spec.durable)
        assert (stored.letter.reason, stored.letter.deliveries) == ("permanent", 1)
        assert stored.letter.error == "recipient list is empty"
        [line] = [entry for entry in logs if entry["event"] == "message.handled"]
        assert line["log_level"] == "error" and line["outcome"] == "dead_lettered"
        assert line["dead_letter_reason"] == "permanent" and line["event_id"] == ev.event_id


async def test_unknown_event_types_are_ignored_on_wildcard_consumers_only(js: JetStreamContext) -> None:
    """A newer replica publishes a type this version has never seen: a consumer on a wildcard
    filter acks it and carries on; an exact-subject consumer, and any consumer given bad data,
    dead-letters it."""
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        domains = space.consumer("domain.>")  # like api-domains on mailroom.domain.>
        emails = space.consumer("email.>")  # like an internal team's subscriber on mailroom.email.>
        exact = space.consumer("email.sent")  # like webhooks-email / api-email-log
        await reconcile(js, [], [domains, emails, exact])
        handled: dict[str, list[str]] = {domains.durable: [], emails.durable: [], exact.durable: []}

        def handler_for(spec: ConsumerSpec):  # type: ignore[no-untyped-def]
            async def handler(event: Event, msg: Msg) -> None:
                handled[spec.durable].append(event.event_id)

            return handler

        future_domain = {"type": "domain.future_thing", "event_id": "evt_fd", "tenant_id": "ten_1", "x": 1}
        future_email = {"type": "email.future_thing", "event_id": "evt_fe", "tenant_id": "ten_1", "email_id": "m"}
        await space.publish("domain.future_thing", msgspec.json.encode(future_domain))
        await space.publish("email.future_thing", msgspec.json.encode(future_email))
        # The same future type on a subject an exact consumer follows, and plain garbage.
        await space.publish("email.sent", msgspec.json.encode({**future_email, "event_id": "evt_fe2"}))
        await space.publish("email.sent", b"\x00 not json")
        # A known type with bad data on a wildcard consumer is still bad data.
        await space.publish("domain.created", msgspec.json.encode({"type": "domain.created", "event_id": "evt_bad"}))
        known_domain, known_email = domain_created(), sent(5)
        await space.publish("domain.created", encode(known_domain), known_domain.event_id)
        await space.publish("email.sent", encode(known_email), known_email.event_id)

        stop = asyncio.Event()
        tasks = [asyncio.create_task(consume(js, s, handler_for(s), stop=stop)) for s in (domains, emails, exact)]
        await eventually(
            lambda: (
                handled[domains.durable] == [known_domain.event_id]
                and handled[emails.durable] == [known_email.event_id]
                and handled[exact.durable] == [known_email.event_id]
            )
        )
        for spec in (domains, emails, exact):
            await eventually(lambda spec=spec: settled(js, spec))  # type: ignore[misc]
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 1)

        def reasons(spec: ConsumerSpec) -> list[tuple[str, str]]:
            return sorted((s.letter.reason, s.letter.event_type or "") for s in letters[spec.durable])

        letters = {s.durable: await dlq.list_dead_letters(js, consumer=s.durable) for s in (domains, emails, exact)}
        assert reasons(domains) == [("undecodable", "domain.created")]  # bad data, not an unknown type
        # The wildcard email consumer saw both garbage and the future type on email.sent.
        assert reasons(emails) == [("undecodable", "")]
        assert reasons(exact) == [("undecodable", ""), ("undecodable", "email.future_thing")]


async def test_one_summary_line_per_message_with_the_handlers_fields(js: JetStreamContext) -> None:
    async with Space(js) as space:
        from mailroom_kit.jetstream import reconcile

        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        flaky = sent(6)
        tries = 0

        async def handler(event: Event, msg: Msg) -> None:
            nonlocal tries
            tries += 1
            note(result="projected", attempt=tries, ignored_none=None, outcome="not-the-kit's")
            if tries == 1:
                note(level="warning", why="first try")
                raise Retry("once", delay=0.05)

        stop = asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(consume(js, spec, handler, stop=stop))
            await space.publish("email.sent", encode(flaky), flaky.event_id)
            await eventually(lambda: tries == 2)
            await eventually(lambda: settled(js, spec))
            stop.set()
            await asyncio.wait_for(task, 1)
        lines = [entry for entry in logs if entry.get("consumer") == spec.durable]
        assert [line["event"] for line in lines] == ["message.handled", "message.handled"]
        first, second = lines
        assert (first["outcome"], first["log_level"], first["why"], first["delivery"]) == (
            "retry",
            "warning",
            "first try",
            1,
        )
        assert (second["outcome"], second["log_level"], second["delivery"], second["attempt"]) == ("ack", "info", 2, 2)
        for line in lines:
            assert line["subject"] == f"{space.prefix}.email.sent" and line["event_type"] == "email.sent"
            assert line["event_id"] == flaky.event_id and line["email_id"] == flaky.email_id
            assert line["result"] == "projected" and "ignored_none" not in line
            assert isinstance(line["duration_ms"], float)
        assert "why" not in second  # fields belong to one message's line only


async def test_inbox_claim_is_once_per_consumer(database_url: str) -> None:
    schema = f"kit_{secrets.token_hex(3)}"
    await migrate(database_url, schema, HERE)
    async with await connect(database_url, schema) as conn:
        assert await inbox.claim(conn, "webhooks-email", "evt_1")
        assert not await inbox.claim(conn, "webhooks-email", "evt_1")
        assert await inbox.claim(conn, "api-email-log", "evt_1")
        await conn.rollback()
        assert await inbox.claim(conn, "webhooks-email", "evt_1")  # a rolled-back claim never happened
