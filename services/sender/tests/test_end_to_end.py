"""The real service process (`python -m mailroom_sender run`) against Postgres, its own
nats-server and the SES emulator: queued emails in, each sent exactly once, one EmailSent per
email on the stream, SES Send events for already-settled emails change nothing, clean stop."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest
from mailroom_contracts import decode_event, encode, subject_for
from mailroom_contracts.events import EmailProviderAccepted, EmailQueued, EmailSent, Event
from mailroom_contracts.streams import EMAIL_STREAM, SENDER_PROVIDER_ACCEPTED, SENDER_QUEUED, STREAMS
from mailroom_devstack.infra import NatsServer, free_port
from mailroom_kit.db import Pool
from mailroom_kit.ids import new_id
from mailroom_kit.jetstream import reconcile
from mailroom_kit.runtime import Runtime
from mailroom_sender.app import MIGRATIONS, Sender
from mailroom_sender.handlers import SenderHandlers
from mailroom_sender.providers import SesProvider
from mailroom_sender.service import SCHEMA
from mailroom_sender.settings import SenderSettings
from mailroom_ses_emulator import EmulatorServer
from nats.aio.client import Client
from nats.js import JetStreamContext

from .conftest import CONFIG_SET, delivery_row, make_service, outbox_events, queued, redelivered, sent_messages

TOPIC = "arn:aws:sns:us-east-1:000000000000:mailroom-ses-events"
BODY_MARKER = "SECRET-BODY-7f3a"


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


class SenderProcess:
    def __init__(self, *, database_url: str, nats_url: str, ses_url: str, log_path: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {
            **os.environ,
            "MAILROOM_DATABASE_URL": database_url,
            "MAILROOM_NATS_URL": nats_url,
            "MAILROOM_SES_ENDPOINT_URL": ses_url,
            "MAILROOM_AWS_REGION": "us-east-1",
            "MAILROOM_LOG_FORMAT": "json",
            "MAILROOM_SENDER_PORT": str(self.port),
            "MAILROOM_SENDER_CONFIGURATION_SET": CONFIG_SET,
            "MAILROOM_SENDER_SES_EVENTS_TOPIC_ARN": TOPIC,
            "MAILROOM_SENDER_CONCURRENCY": "8",
            "MAILROOM_SENDER_IN_DOUBT_RECHECK_SECONDS": "1",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "x",
            **extra_env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SenderProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailroom_sender", "run"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"sender not ready:\n{self.log_path.read_text()}")

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.log_path.read_text().splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines


@pytest.fixture
async def js(own_nats: NatsServer) -> AsyncIterator[JetStreamContext]:
    nc: Client = await nats.connect(own_nats.url)
    yield nc.jetstream()
    await nc.close()


async def publish(js: JetStreamContext, event: Event) -> None:
    await js.publish(subject_for(event), encode(event), headers={"Nats-Msg-Id": event.event_id})


async def stream_events(js: JetStreamContext) -> list[Event]:
    info = await js.stream_info(EMAIL_STREAM.name)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(EMAIL_STREAM.name, seq)
        assert raw.data is not None
        out.append(decode_event(raw.data))
    return out


async def test_service_sends_each_queued_email_exactly_once(
    sender_db: str, own_nats: NatsServer, js: JetStreamContext, emulator: EmulatorServer, tmp_path: Path
) -> None:
    # A send rate the burst below cannot use up: every live email is sent by the consumer's own
    # attempt (none waits in the sender's queue for a token), so each has its `sent` summary line here.
    httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 10_000}).raise_for_status()
    sender = SenderProcess(
        database_url=sender_db, nats_url=own_nats.url, ses_url=emulator.url, log_path=tmp_path / "sender.log"
    ).start()
    try:
        live = [queued(to=[f"user{i}@example.org"], text=f"{BODY_MARKER} {i}", html=None) for i in range(60)]
        test = [queued(mode="test", to=["success@simulator.amazonses.com"], text=BODY_MARKER) for _ in range(10)]
        rejected = [queued(from_email="noreply@unverified.test")]
        emails: list[EmailQueued] = [*live, *test, *rejected]
        for ev in emails:
            await publish(js, ev)
        for ev in live[:15]:  # the same emails queued again (a copy with another event id)
            await publish(js, redelivered(ev))

        async def settled() -> list[Event]:
            while True:
                events = await stream_events(js)
                done = {
                    e.email_id  # type: ignore[attr-defined]
                    for e in events
                    if e.__struct_config__.tag in ("email.sent", "email.failed")
                }
                if done >= {e.email_id for e in emails}:
                    return events
                await asyncio.sleep(0.2)

        events = await asyncio.wait_for(settled(), 30)
        # SES Send events arrive for emails already settled by the send itself: nothing changes.
        for ev in live[:5]:
            [msg] = sent_messages(emulator, ev.email_id)
            await publish(
                js,
                EmailProviderAccepted(
                    event_id=new_id("evt"),
                    occurred_at=datetime.now(UTC),
                    tenant_id=ev.tenant_id,
                    email_id=ev.email_id,
                    provider_message_id=msg["message_id"],
                ),
            )

        await asyncio.wait_for(drained(js), 10)
        events = await stream_events(js)
    finally:
        exit_code = sender.terminate() if sender.proc and sender.proc.poll() is None else None
        sender.kill()
        httpx.put(f"{emulator.url}/_emulator/send-quota", json={"MaxSendRate": 200})
    assert exit_code == 0

    ids = {e.email_id for e in emails}
    sent = collections.Counter(e.email_id for e in events if isinstance(e, EmailSent) and e.email_id in ids)
    failed = [e for e in events if e.__struct_config__.tag == "email.failed" and e.email_id in ids]  # type: ignore[attr-defined]
    assert sent == {e.email_id: 1 for e in [*live, *test]}
    assert [(e.email_id, e.reason) for e in failed] == [(rejected[0].email_id, "message_rejected")]  # type: ignore[attr-defined]
    for ev in live:
        [msg] = sent_messages(emulator, ev.email_id)
        assert msg["tags"]["mailroom_tenant_id"] == "ten_test"
    assert all(sent_messages(emulator, ev.email_id) == [] for ev in [*test, *rejected])
    simulated = [
        e
        for e in events
        if e.__struct_config__.tag == "email.delivered" and e.email_id in {t.email_id for t in test}  # type: ignore[attr-defined]
    ]
    assert len(simulated) == len(test)

    # on_start pointed the configuration set's events at the topic.
    sets = httpx.get(f"{emulator.url}/_emulator/configuration-sets").json()["configuration_sets"]
    [cs] = [c for c in sets if c["name"] == CONFIG_SET]
    assert [d["SnsDestination"]["TopicArn"] for d in cs["event_destinations"]] == [TOPIC]

    # One summary line per handled email, with its outcome; never the body.
    logs = sender.log_lines()
    assert BODY_MARKER not in sender.log_path.read_text()
    handled = [
        line for line in logs if line.get("event") == "message.handled" and line["consumer"] == SENDER_QUEUED.durable
    ]
    outcomes = collections.Counter((line["email_id"], line["result"]) for line in handled)
    for ev in live:
        assert outcomes[(ev.email_id, "sent")] == 1
    assert outcomes[(rejected[0].email_id, "failed")] == 1
    # Each copy is acked as a duplicate (possibly after waiting while the original was in flight).
    assert all(outcomes[(ev.email_id, "duplicate")] >= 1 for ev in live[:15])
    assert all(line["tenant_id"] == "ten_test" for line in handled)


async def drained(js: JetStreamContext) -> None:
    while True:
        infos = [
            await js.consumer_info(EMAIL_STREAM.name, c.durable) for c in (SENDER_QUEUED, SENDER_PROVIDER_ACCEPTED)
        ]
        if all(i.num_pending == 0 and i.num_ack_pending == 0 for i in infos):
            return
        await asyncio.sleep(0.1)


async def test_send_events_received_while_down_settle_in_doubt_sends_before_any_resend(
    sender_db: str,
    pool: Pool,
    own_nats: NatsServer,
    js: JetStreamContext,
    emulator: EmulatorServer,
    ses_provider: SesProvider,
    tmp_path: Path,
) -> None:
    """The sender died after SES took the messages; by the time it is back the in-doubt window
    has expired, but SES's Send events are already on the stream: they win, nothing is resent."""
    await reconcile(js, STREAMS, [SENDER_QUEUED, SENDER_PROVIDER_ACCEPTED])
    service = make_service(ses_provider, in_doubt_seconds=1)
    emails = [queued(to=[f"crash{i}@example.org"]) for i in range(20)]
    for ev in emails:
        prepared = service.prepare(ev)
        async with pool.connection() as conn, conn.transaction():
            await service.begin(conn, ev, prepared)  # TX1 committed ...
        result = await service.send(ev, prepared)  # ... SES took it ... and the process died before TX2.
        await publish(js, ev)  # the queued message comes back after the crash
        await publish(
            js,
            EmailProviderAccepted(  # what the events service makes of SES's Send event
                event_id=new_id("evt"),
                occurred_at=datetime.now(UTC),
                tenant_id=ev.tenant_id,
                email_id=ev.email_id,
                provider_message_id=result.message_id,
            ),
        )
    await asyncio.sleep(1.2)  # the in-doubt window expires while the sender is down
    sender = SenderProcess(
        database_url=sender_db,
        nats_url=own_nats.url,
        ses_url=emulator.url,
        log_path=tmp_path / "sender.log",
        MAILROOM_SENDER_IN_DOUBT_SECONDS="1",
    ).start()
    try:
        await asyncio.wait_for(drained(js), 15)
        events = await stream_events(js)
    finally:
        exit_code = sender.terminate() if sender.proc and sender.proc.poll() is None else None
        sender.kill()
    assert exit_code == 0
    for ev in emails:
        assert len(sent_messages(emulator, ev.email_id)) == 1, ev.email_id
    sent = collections.Counter(e.email_id for e in events if isinstance(e, EmailSent))
    assert {ev.email_id: sent[ev.email_id] for ev in emails} == {ev.email_id: 1 for ev in emails}


async def test_queued_consumer_waits_for_the_send_event_backlog(
    sender_db: str, pool: Pool, own_nats: NatsServer, emulator: EmulatorServer, ses_provider: SesProvider
) -> None:
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    await reconcile(js, STREAMS, [SENDER_QUEUED, SENDER_PROVIDER_ACCEPTED])
    ev = queued()
    service = make_service(ses_provider)
    prepared = service.prepare(ev)
    async with pool.connection() as conn, conn.transaction():
        await service.begin(conn, ev, prepared)
    await publish(
        js,
        EmailProviderAccepted(
            event_id=new_id("evt"),
            occurred_at=datetime.now(UTC),
            tenant_id=ev.tenant_id,
            email_id=ev.email_id,
            provider_message_id="p-1",
        ),
    )
    settings = SenderSettings.from_env({"MAILROOM_DATABASE_URL": sender_db, "MAILROOM_NATS_URL": own_nats.url})
    sender = Sender(settings, ses=ses_provider)
    rt = Runtime(name="sender", schema=SCHEMA, settings=settings, migrations_dir=MIGRATIONS, pool=pool, nc=nc, js=js)
    gate = asyncio.create_task(sender.settle_backlog_first(rt))
    await asyncio.sleep(1.0)
    assert not gate.done()  # a Send event is waiting: queued emails are not looked at yet
    worker = asyncio.create_task(sender.consume_provider_accepted(rt))
    await asyncio.wait_for(gate, 5)
    rt.stop.set()
    await asyncio.wait_for(worker, 5)
    await nc.close()
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT state FROM deliveries WHERE email_id = %s", (ev.email_id,))).fetchone()
    assert row is not None and row["state"] == "sent"


async def test_send_events_of_one_fetch_settle_each_in_doubt_send_once(
    sender_db: str,
    pool: Pool,
    own_nats: NatsServer,
    emulator: EmulatorServer,
    ses_provider: SesProvider,
    handlers: SenderHandlers,
) -> None:
    """issue 15: the provider_accepted consumer applies a fetch in one transaction. Among the Send
    events of one fetch: in-flight sends (one with its event twice), a `pending` email after a failed
    attempt, an email sent already and an unknown one. Each in-doubt one gets exactly one EmailSent
    with its event's message id; the others change nothing."""
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    await reconcile(js, STREAMS, [SENDER_QUEUED, SENDER_PROVIDER_ACCEPTED])
    service = make_service(ses_provider)
    in_flight = [queued() for _ in range(5)]
    retried = queued()
    for ev in [*in_flight, retried]:
        async with pool.connection() as conn, conn.transaction():
            await service.begin(conn, ev, service.prepare(ev))
    async with pool.connection() as conn:
        await conn.execute("UPDATE deliveries SET state = 'pending' WHERE email_id = %s", (retried.email_id,))
    done = queued()
    await handlers.email_queued(done)
    done_row = await delivery_row(pool, done.email_id)
    assert done_row is not None and done_row["state"] == "sent"

    def send_event(email_id: str, message_id: str) -> EmailProviderAccepted:
        return EmailProviderAccepted(
            event_id=new_id("evt"),
            occurred_at=datetime.now(UTC),
            tenant_id="ten_test",
            email_id=email_id,
            provider_message_id=message_id,
        )

    settling = [*in_flight, retried]
    for ev in settling:
        await publish(js, send_event(ev.email_id, f"ses-{ev.email_id}"))
    await publish(js, send_event(in_flight[0].email_id, "ses-again"))  # the same email's event once more
    await publish(js, send_event(done.email_id, "ses-late"))
    await publish(js, send_event(new_id("msg"), "ses-unknown"))
    settings = SenderSettings.from_env({"MAILROOM_DATABASE_URL": sender_db, "MAILROOM_NATS_URL": own_nats.url})
    sender = Sender(settings, ses=ses_provider)
    rt = Runtime(name="sender", schema=SCHEMA, settings=settings, migrations_dir=MIGRATIONS, pool=pool, nc=nc, js=js)
    worker = asyncio.create_task(sender.consume_provider_accepted(rt))
    try:
        await asyncio.wait_for(drained(js), 15)
    finally:
        rt.stop.set()
        await asyncio.wait_for(worker, 5)
        await nc.close()
    for ev in settling:
        row = await delivery_row(pool, ev.email_id)
        assert row is not None and row["state"] == "sent", ev.email_id
        assert row["provider_message_id"] == f"ses-{ev.email_id}"
        [event] = await outbox_events(pool, ev.email_id)
        assert isinstance(event, EmailSent) and event.provider_message_id == f"ses-{ev.email_id}"
        assert sent_messages(emulator, ev.email_id) == []  # settled by the event, never sent by the test
    done_row_after = await delivery_row(pool, done.email_id)
    assert done_row_after is not None and done_row_after["provider_message_id"] == done_row["provider_message_id"]
    assert len(await outbox_events(pool, done.email_id)) == 1  # its own EmailSent, nothing more
