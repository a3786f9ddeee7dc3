"""The events service end to end inside one process: the real Litestar app (AsyncTestClient)
over a real kit Runtime (Postgres `events` schema, a private nats-server with the contract
streams), SNS messages signed by a local key whose certificate a real local HTTP server serves,
and the real outbox relay publishing to JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import uuid
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
import structlog
from events_testkit import (
    LOCAL_TOPIC,
    TEXT_PLAIN,
    UNAVAILABLE_CERT_PATH,
    CertServer,
    LocalSigner,
    confirmation,
    notification,
    ses_record,
)
from litestar.testing import AsyncTestClient
from mailroom_contracts import decode_event, subjects
from mailroom_contracts.events import (
    EmailBounced,
    EmailClicked,
    EmailDelivered,
    EmailOpened,
    EmailProviderAccepted,
    EmailUnsubscribed,
    Event,
)
from mailroom_contracts.streams import EMAIL_STREAM
from mailroom_events import cli, repository, service
from mailroom_events.app import MIGRATIONS, create_app, relay
from mailroom_events.groups import sns_groups
from mailroom_events.handlers import MAX_BODY
from mailroom_events.mapping import deterministic_event_id
from mailroom_events.ses import TOPIC_VALIDATION_TEXT
from mailroom_events.settings import EventsSettings
from mailroom_events.sns import parse_sns_message
from mailroom_kit.db import open_pool
from mailroom_kit.ids import new_id
from mailroom_kit.retention import Purge, purge_once
from mailroom_kit.runtime import Runtime
from mailroom_kit.settings import DAY, SettingsError

OTHER_TOPIC = "arn:aws:sns:us-east-1:000000000000:someone-else"

Client = AsyncTestClient  # type: ignore[type-arg]


# --------------------------------------------------------------------------- building messages


async def post(client: Client, body: dict[str, Any] | bytes) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/ses/sns", content=content, headers=TEXT_PLAIN)


def new_email_id() -> str:
    return new_id("msg")


# --------------------------------------------------------------------------- reading state


async def outbox_events(runtime: Runtime, email_id: str) -> list[Event]:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT payload FROM outbox ORDER BY id")
        rows = await cur.fetchall()
    events = [decode_event(bytes(row["payload"])) for row in rows]
    return [e for e in events if getattr(e, "email_id", None) == email_id]


async def outbox_count(runtime: Runtime) -> int:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM outbox")
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def sns_row(runtime: Runtime, message_id: str) -> dict[str, Any] | None:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM sns_messages WHERE message_id = %s", (message_id,))
        return await cur.fetchone()


async def stream_messages(runtime: Runtime, email_id: str) -> list[tuple[str, dict[str, str], Event]]:
    """(subject, headers, event) of every message on MAILROOM_EMAIL about `email_id`."""
    info = await runtime.js.stream_info(EMAIL_STREAM.name)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        with contextlib.suppress(Exception):  # a deleted sequence
            raw = await runtime.js.get_msg(EMAIL_STREAM.name, seq)
            event = decode_event(raw.data or b"")
            if getattr(event, "email_id", None) == email_id:
                found.append((raw.subject or "", dict(raw.headers or {}), event))
    return found


# --------------------------------------------------------------------------- notifications → events


@pytest.mark.parametrize("version", ["1", "2"])
async def test_delivery_becomes_one_email_delivered_and_is_relayed_with_msg_id(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer, version: str
) -> None:
    email_id = new_email_id()
    body = notification(
        signer, cert_server, ses_record("delivery", email_id=email_id, tenant_id="ten_a", mode="test"), version=version
    )
    r = await post(client, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "mapped"}
    assert r.headers["x-request-id"].startswith("req_")

    (event,) = await outbox_events(runtime, email_id)
    assert isinstance(event, EmailDelivered)
    assert (event.tenant_id, event.mode, event.recipients) == ("ten_a", "test", ["recipient@example.com"])
    assert event.provider_message_id == "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
    assert event.smtp_response == "250 2.6.0 Message received"
    # The id is derived from the SNS MessageId: a redelivery could only ever produce the same id.
    assert event.event_id == deterministic_event_id(body["MessageId"], 0, event.occurred_at)
    row = await sns_row(runtime, body["MessageId"])
    assert row is not None
    assert (
        row["topic_arn"],
        row["type"],
        row["ses_event_type"],
        row["email_id"],
        row["tenant_id"],
        row["events_emitted"],
    ) == (LOCAL_TOPIC, "Notification", "delivery", email_id, "ten_a", 1)

    # The service's own relay worker publishes it with Nats-Msg-Id = event id, then empties the outbox.
    stop_relay = asyncio.Event()
    relay_rt = dataclasses.replace(runtime, stop=stop_relay)
    task = asyncio.create_task(relay(relay_rt))
    try:
        for _ in range(100):
            if not await outbox_events(runtime, email_id) and await stream_messages(runtime, email_id):
                break
            await asyncio.sleep(0.05)
    finally:
        stop_relay.set()
        await asyncio.wait_for(task, 10)
    published = await stream_messages(runtime, email_id)
    assert len(published) == 1
    subject, headers, relayed = published[0]
    assert subject == subjects.EMAIL_DELIVERED
    assert headers["Nats-Msg-Id"] == event.event_id
    assert relayed == event
    assert await outbox_events(runtime, email_id) == []

    # SNS redelivers the same message later: acknowledged, nothing new anywhere.
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "duplicate"}
    assert await outbox_events(runtime, email_id) == []
    assert len(await stream_messages(runtime, email_id)) == 1


async def test_same_message_twice_and_concurrently_gives_one_event(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    body = notification(signer, cert_server, ses_record("delivery", email_id=email_id))
    first = await post(client, body)
    second = await post(client, body)
    assert [first.json()["status"], second.json()["status"]] == ["mapped", "duplicate"]
    assert len(await outbox_events(runtime, email_id)) == 1

    other_email = new_email_id()
    body = notification(signer, cert_server, ses_record("delivery", email_id=other_email))
    answers = await asyncio.gather(*(post(client, body) for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert sorted(a.json()["status"] for a in answers) == ["duplicate"] * 5 + ["mapped"]
    (event,) = await outbox_events(runtime, other_email)
    assert isinstance(event, EmailDelivered)
    row = await sns_row(runtime, body["MessageId"])
    assert row is not None and row["events_emitted"] == 1


async def test_concurrent_notifications_share_statements_with_their_own_outcomes(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    """issue 15, group commit: SNS delivers concurrently; the messages that arrive together are
    recorded by one statement, each with the outcome it would have alone (a duplicate among them
    too), their events in the outbox in order, and an unmatched event still kept on its own."""
    emails = [new_email_id() for _ in range(12)]
    bodies = [
        notification(signer, cert_server, ses_record(kind, email_id=email_id))
        for email_id in emails
        for kind in ("send", "delivery")
    ]
    unmatched = notification(signer, cert_server, ses_record("delivery"))  # no Mailroom tags
    msgs = [parse_sns_message(json.dumps(b)) for b in [*bodies, bodies[0], unmatched]]
    groups = sns_groups(runtime.pool)
    # The first statements wait behind a lock on the outbox, so the messages arriving meanwhile
    # queue up for the next ones, as they do when Postgres is busy.
    async with runtime.pool.connection() as blocker:
        await blocker.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
        ingests = [asyncio.create_task(service.ingest_grouped(groups, runtime.pool, m)) for m in msgs]
        for _ in range(500):
            if groups.waiting >= len(bodies) - 1:
                break
            await asyncio.sleep(0.01)
        assert groups.waiting >= len(bodies) - 1
        await blocker.rollback()
    statuses = await asyncio.gather(*ingests)
    await groups.close()
    assert sorted(statuses[: len(bodies) + 1]) == ["duplicate"] + ["mapped"] * len(bodies)
    assert statuses[-1] == "not_ours"
    assert groups.items == len(bodies) + 1  # every matched message went through the groups, not the unmatched
    assert groups.statements < groups.items / 4  # and they shared statements
    for email_id in emails:  # (in the order their statements committed: SNS promises none either)
        kinds = sorted(type(e).__name__ for e in await outbox_events(runtime, email_id))
        assert kinds == [EmailDelivered.__name__, EmailProviderAccepted.__name__]
    for body in bodies:
        row = await sns_row(runtime, body["MessageId"])
        assert row is not None and row["events_emitted"] == 1
    async with runtime.pool.connection() as conn:
        kept = await repository.list_unmatched(conn, limit=50, reason="not_ours")
    assert unmatched["MessageId"] in {u.message_id for u in kept}
    # The service's endpoint writes through its own groups.
    app_groups = client.app.state.sns_groups
    before = app_groups.items
    email_id = new_email_id()
    r = await post(client, notification(signer, cert_server, ses_record("delivery", email_id=email_id)))
    assert r.status_code == 200 and r.json() == {"status": "mapped"}
    assert app_groups.items == before + 1
    assert len(await outbox_events(runtime, email_id)) == 1


async def test_a_group_records_each_message_id_once(runtime: Runtime) -> None:
    """`record_messages`: a MessageId seen before, or twice in the group, is a duplicate; the
    outbox rows follow the records' order."""
    seen, first, second = (f"grp-{uuid.uuid4()}" for _ in range(3))

    def record(message_id: str, *event_ids: str) -> repository.Record:
        return repository.Record(
            message_id=message_id,
            topic_arn=LOCAL_TOPIC,
            type="Notification",
            events_emitted=len(event_ids),
            outbox=[{"event_id": e, "subject": "mailroom.test", "payload": "e30="} for e in event_ids],
        )

    async with runtime.pool.connection() as conn:
        await conn.set_autocommit(True)
        assert await repository.record_messages(conn, [record(seen)], notify_channel=None) == [True]
        ids = [f"evt_{uuid.uuid4().hex}" for _ in range(3)]
        answers = await repository.record_messages(
            conn,
            [record(first, ids[0], ids[1]), record(seen), record(first, "evt_never"), record(second, ids[2])],
            notify_channel=None,
        )
        assert answers == [True, False, False, True]
        cur = await conn.execute(
            "SELECT event_id FROM outbox WHERE event_id = ANY(%s) OR event_id = 'evt_never' ORDER BY id",
            (ids,),
        )
        assert [r["event_id"] for r in await cur.fetchall()] == ids
        await conn.execute("DELETE FROM outbox WHERE event_id = ANY(%s)", (ids,))


async def test_dedup_row_and_events_commit_or_roll_back_together(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    """A crash after ingesting but before commit leaves neither the MessageId nor the events, so the
    redelivery SNS makes after our failed answer is processed in full."""
    email_id = new_email_id()
    body = notification(signer, cert_server, ses_record("delivery", email_id=email_id))
    msg = parse_sns_message(json.dumps(body))
    with pytest.raises(RuntimeError, match="crash"):
        async with runtime.pool.connection() as conn, conn.transaction():
            assert await service.ingest_notification(conn, msg) == "mapped"
            raise RuntimeError("crash before commit")
    assert await sns_row(runtime, body["MessageId"]) is None
    assert await outbox_events(runtime, email_id) == []
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "mapped"}
    assert len(await outbox_events(runtime, email_id)) == 1


async def test_send_becomes_email_provider_accepted(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    r = await post(client, notification(signer, cert_server, ses_record("send", email_id=email_id)))
    assert r.status_code == 200 and r.json() == {"status": "mapped"}
    (event,) = await outbox_events(runtime, email_id)
    assert isinstance(event, EmailProviderAccepted)
    assert event.provider_message_id == "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
    assert (event.tenant_id, event.mode) == ("ten_test", "live")


async def test_bounce_becomes_email_bounced_with_type_and_subtype(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    record = ses_record("bounce-permanent", email_id=email_id)
    r = await post(client, notification(signer, cert_server, record, version="1"))
    assert r.status_code == 200 and r.json() == {"status": "mapped"}
    (event,) = await outbox_events(runtime, email_id)
    assert isinstance(event, EmailBounced)
    assert (event.bounce_type, event.bounce_subtype) == ("Permanent", "General")
    assert event.recipients == ["recipient@example.com"]
    assert event.diagnostic_code == "smtp; 550 5.1.1 user unknown"


async def test_message_without_mailroom_tags_is_recorded_without_event(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    before = await outbox_count(runtime)
    body = notification(signer, cert_server, ses_record("delivery"))  # the doc example's own tags only
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "not_ours"}
    row = await sns_row(runtime, body["MessageId"])
    assert row is not None
    assert (row["ses_event_type"], row["email_id"], row["events_emitted"]) == ("delivery", None, 0)
    assert await outbox_count(runtime) == before
    # Issue 22: kept for the operator, without the mail's headers; once however often SNS delivers it.
    assert (await post(client, body)).json() == {"status": "duplicate"}
    [kept] = await unmatched_rows(runtime, body["MessageId"])
    assert (kept["reason"], kept["ses_event_type"], kept["topic_arn"]) == ("not_ours", "delivery", LOCAL_TOPIC)
    record = json.loads(ses_record("delivery"))
    assert kept["record"] == {
        "eventType": "Delivery",
        "mail": {k: record["mail"][k] for k in service._MAIL_FIELDS if k in record["mail"]},
    }
    assert "headers" not in kept["record"]["mail"] and "commonHeaders" not in kept["record"]["mail"]
    # What the operator sees.
    out = io.StringIO()
    assert await cli.unmatched(runtime.settings, ["--reason", "not_ours", "--limit", "5"], out=out) == 0
    listed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert body["MessageId"] in [e["message_id"] for e in listed] and len(listed) <= 5
    assert {e["reason"] for e in listed} == {"not_ours"}


async def unmatched_rows(runtime: Runtime, message_id: str) -> list[dict[str, Any]]:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM unmatched_events WHERE message_id = %s", (message_id,))
        return await cur.fetchall()


async def test_matched_events_are_not_kept_as_unmatched(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    body = notification(signer, cert_server, ses_record("delivery", email_id=new_email_id()))
    assert (await post(client, body)).json() == {"status": "mapped"}
    validation = notification(signer, cert_server, TOPIC_VALIDATION_TEXT)
    assert (await post(client, validation)).json() == {"status": "informational"}
    assert await unmatched_rows(runtime, body["MessageId"]) == []
    assert await unmatched_rows(runtime, validation["MessageId"]) == []


async def test_the_unmatched_command_refuses_bad_arguments(runtime: Runtime) -> None:
    for argv in (
        ["--limit", "0"],
        ["--limit", "1001"],
        ["--reason", "other"],
        ["--before", "yesterday"],
        ["--before", "2026-01-01T00:00:00"],
    ):
        with pytest.raises(SystemExit) as exited:
            await cli.unmatched(runtime.settings, argv, out=io.StringIO())
        assert exited.value.code == 2, argv


async def test_unmatched_events_are_purged_after_their_retention(runtime: Runtime) -> None:
    async with runtime.pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO unmatched_events (message_id, reason, topic_arn, received_at)"
            " VALUES ('old-one', 'not_ours', 't', now() - interval '8 days'), ('new-one', 'not_ours', 't', now())"
        )
    assert (
        await purge_once(
            runtime.pool, Purge("unmatched_events", 7 * DAY, repository.purge_unmatched), schema="events", batch=10
        )
        >= 1
    )
    assert await unmatched_rows(runtime, "old-one") == []
    assert len(await unmatched_rows(runtime, "new-one")) == 1


async def test_open_and_click_of_our_email_become_events_once_per_sns_message(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    opened = notification(signer, cert_server, ses_record("open", email_id=email_id))
    clicked = notification(signer, cert_server, ses_record("click", email_id=email_id))
    for _ in range(3):  # SNS redelivers: the same message three times is one event
        for body in (opened, clicked):
            r = await post(client, body)
            assert r.status_code == 200
    row = await sns_row(runtime, opened["MessageId"])
    assert row is not None and (row["ses_event_type"], row["email_id"]) == ("open", email_id)
    events = await outbox_events(runtime, email_id)
    assert [type(e) for e in events] == [EmailOpened, EmailClicked]
    assert isinstance(events[1], EmailClicked) and events[1].link


async def test_subscription_of_our_email_becomes_email_unsubscribed(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    body = notification(signer, cert_server, ses_record("subscription", email_id=email_id))
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "mapped"}
    row = await sns_row(runtime, body["MessageId"])
    assert row is not None and (row["ses_event_type"], row["email_id"]) == ("subscription", email_id)
    [event] = await outbox_events(runtime, email_id)
    assert isinstance(event, EmailUnsubscribed) and event.recipients == ["recipient@example.com"]


async def test_topic_validation_message_is_acknowledged_without_event(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    before = await outbox_count(runtime)
    body = notification(signer, cert_server, TOPIC_VALIDATION_TEXT)
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "informational"}
    assert await sns_row(runtime, body["MessageId"]) is not None
    assert await outbox_count(runtime) == before


async def test_authentic_but_unparseable_message_is_acknowledged_and_recorded(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    before = await outbox_count(runtime)
    messages = ['{"eventType": "Delivery"}', "not an SES event", '{"eventType": "Teleport", "mail": {}}']
    for message in messages:
        body = notification(signer, cert_server, message)
        r = await post(client, body)
        assert r.status_code == 200 and r.json() == {"status": "unparseable"}, message
        row = await sns_row(runtime, body["MessageId"])
        assert row is not None and row["ses_event_type"] is None
        [kept] = await unmatched_rows(runtime, body["MessageId"])  # issue 22: kept, with why
        assert kept["reason"] == "unparseable" and kept["detail"]
        expected = (
            None if message == "not an SES event" else {"eventType": json.loads(message)["eventType"], "mail": {}}
        )
        assert kept["record"] == expected
        # SNS would only redeliver it if we had not answered 2xx; if it does anyway, it is a duplicate.
        r = await post(client, body)
        assert r.status_code == 200 and r.json() == {"status": "duplicate"}
    assert await outbox_count(runtime) == before


# --------------------------------------------------------------------------- refusals


async def test_forged_message_is_refused_and_records_nothing(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    body = notification(signer, cert_server, ses_record("delivery", email_id=email_id))
    message = body["Message"]
    i = message.index("recipient@example.com")
    forged = {**body, "Message": message[:i] + "R" + message[i + 1 :]}  # one byte changed
    assert len(forged["Message"]) == len(message)
    r = await post(client, forged)
    assert r.status_code == 403
    payload = r.json()
    assert payload["error"] == "forbidden" and payload["request_id"].startswith("req_")
    assert r.headers["x-request-id"] == payload["request_id"]
    assert await sns_row(runtime, body["MessageId"]) is None
    assert await outbox_events(runtime, email_id) == []
    # The authentic original is still accepted afterwards (the forgery did not burn its MessageId).
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "mapped"}


async def test_unknown_topic_is_refused(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    body = notification(signer, cert_server, ses_record("delivery", email_id=email_id), topic=OTHER_TOPIC)
    r = await post(client, body)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert await sns_row(runtime, body["MessageId"]) is None
    assert await outbox_events(runtime, email_id) == []


async def test_bad_json_is_400_invalid_json(client: Client) -> None:
    for content in (b"{not json", b"[]", b"", b'{"Type": "Notification"}', "\u00e9".encode("latin-1")):
        r = await post(client, content)
        assert r.status_code == 400, content
        assert r.json()["error"] == "invalid_json"


async def test_oversize_body_is_413(client: Client) -> None:
    r = await post(client, b"{" + b" " * MAX_BODY + b"}")
    assert r.status_code == 413
    assert r.json()["error"] == "payload_too_large"

    # A Content-Length that understates the body: the limit holds on the bytes actually received.
    r = await client.post("/ses/sns", content=b" " * (MAX_BODY + 1), headers={**TEXT_PLAIN, "Content-Length": "100"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


async def test_certificate_temporarily_unavailable_is_503_then_accepted(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    body = notification(
        signer,
        cert_server,
        ses_record("delivery", email_id=email_id),
        cert_url=cert_server.base + UNAVAILABLE_CERT_PATH,
    )
    r = await post(client, body)
    assert r.status_code == 503 and r.json()["error"] == "unavailable"
    assert int(r.headers["retry-after"]) > 0
    assert await sns_row(runtime, body["MessageId"]) is None
    # SNS redelivers after a 5xx; by then the certificate host answers again.
    cert_server.cert_available.set()
    r = await post(client, body)
    assert r.status_code == 200 and r.json() == {"status": "mapped"}
    assert len(await outbox_events(runtime, email_id)) == 1


async def test_database_unavailable_is_503(runtime: Runtime, signer: LocalSigner, cert_server: CertServer) -> None:
    assert isinstance(runtime.settings, EventsSettings)
    pool = await open_pool(runtime.settings.database_url, "events")
    await pool.close()
    down = Runtime(
        name="events",
        schema="events",
        settings=runtime.settings,
        migrations_dir=MIGRATIONS,
        pool=pool,
        nc=runtime.nc,
        js=runtime.js,
    )
    async with AsyncTestClient(app=create_app(down)) as down_client:
        body = notification(signer, cert_server, ses_record("delivery", email_id=new_email_id()))
        r = await post(down_client, body)
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
        assert "retry-after" in r.headers
        assert (await down_client.get("/ready")).status_code == 503
    assert await sns_row(runtime, body["MessageId"]) is None


# --------------------------------------------------------------------------- subscriptions


async def subscriptions(runtime: Runtime) -> set[str]:
    async with runtime.pool.connection() as conn:
        cur = await conn.execute("SELECT topic_arn FROM subscriptions")
        return {row["topic_arn"] for row in await cur.fetchall()}


def confirm_requests(server: CertServer, token: str) -> int:
    return sum(1 for r in server.requests if token in r.path)


async def test_subscription_confirmation_gets_subscribe_url_once_and_records_topic(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    token = uuid.uuid4().hex
    url = f"{cert_server.base}/confirm?Action=ConfirmSubscription&TopicArn={LOCAL_TOPIC}&Token={token}"
    r = await post(client, confirmation(signer, cert_server, url, token))
    assert r.status_code == 200 and r.json() == {"status": "confirmed"}
    assert confirm_requests(cert_server, token) == 1
    assert LOCAL_TOPIC in await subscriptions(runtime)


async def test_subscribe_url_on_untrusted_host_is_refused_and_never_fetched(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    token = uuid.uuid4().hex
    query = f"/confirm?Action=ConfirmSubscription&Token={token}"
    untrusted = [
        f"http://localhost:{cert_server.port}{query}",  # same server, host not matching the pattern
        f"http://127.0.0.1{query}",  # no port: the pattern wants host:port
        f"http://user@127.0.0.1:{cert_server.port}{query}",
        f"ftp://127.0.0.1:{cert_server.port}{query}",
        "http://169.254.169.254/latest/meta-data/",
    ]
    for url in untrusted:
        r = await post(
            client, confirmation(signer, cert_server, url, token, topic="arn:aws:sns:us-east-1:000000000000:another")
        )
        assert r.status_code == 403, url
        assert r.json()["error"] == "forbidden"
    assert confirm_requests(cert_server, token) == 0
    assert "arn:aws:sns:us-east-1:000000000000:another" not in await subscriptions(runtime)


async def test_subscription_confirmation_for_unknown_topic_is_refused_and_never_fetched(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    token = uuid.uuid4().hex
    url = f"{cert_server.base}/confirm?Action=ConfirmSubscription&TopicArn={OTHER_TOPIC}&Token={token}"
    r = await post(client, confirmation(signer, cert_server, url, token, topic=OTHER_TOPIC))
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert confirm_requests(cert_server, token) == 0
    assert OTHER_TOPIC not in await subscriptions(runtime)


async def test_unsubscribe_confirmation_is_acknowledged_without_fetching(
    client: Client, signer: LocalSigner, cert_server: CertServer
) -> None:
    token = uuid.uuid4().hex
    url = f"{cert_server.base}/confirm?Action=ConfirmSubscription&Token={token}"
    r = await post(client, confirmation(signer, cert_server, url, token, type_="UnsubscribeConfirmation"))
    assert r.status_code == 200 and r.json() == {"status": "ignored"}
    assert confirm_requests(cert_server, token) == 0


# --------------------------------------------------------------------------- ops routes and settings


async def test_health_ready_metrics_and_unknown_routes(client: Client) -> None:
    r = await client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": {"nats": True, "postgres": True, "migrations": True}}
    r = await client.get("/metrics")
    assert r.status_code == 200 and "mailroom_events_sns_messages_total" in r.text
    r = await client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await client.get("/ses/sns")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


# --------------------------------------------------------------------------- one log line per request


def summary_lines(entries: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in entries if e["event"] == "http.request"]


async def test_each_request_is_logged_once_by_the_kit(
    client: Client, runtime: Runtime, signer: LocalSigner, cert_server: CertServer
) -> None:
    email_id = new_email_id()
    body = notification(signer, cert_server, ses_record("delivery", email_id=email_id, tenant_id="ten_log"))
    forged = {**body, "Message": body["Message"].replace("recipient@example.com", "Recipient@example.com")}
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        ok = await post(client, body)
        refused = await post(client, forged)
        missing = await client.get("/nowhere")
        await client.get("/health")
    assert (ok.status_code, refused.status_code, missing.status_code) == (200, 403, 404)
    assert [e["event"] for e in entries] == ["http.request"] * 3  # nothing else, and nothing for /health
    mapped, rejected, unrouted = summary_lines(entries)
    assert (mapped["method"], mapped["path"], mapped["status"]) == ("POST", "/ses/sns", 200)
    assert mapped["request_id"] == ok.headers["x-request-id"]
    assert mapped["outcome"] == "mapped" and mapped["ses_event_type"] == "delivery"
    assert (mapped["email_id"], mapped["tenant_id"]) == (email_id, "ten_log")
    assert mapped["sns_message_id"] == body["MessageId"] and mapped["sns_type"] == "Notification"
    assert mapped["topic_arn"] == LOCAL_TOPIC and len(mapped["event_ids"]) == 1
    assert rejected["status"] == 403 and rejected["error"] == "forbidden" and rejected["sns_rejected"]
    assert rejected["request_id"] == refused.headers["x-request-id"] == refused.json()["request_id"]
    assert "email_id" not in rejected and "outcome" not in rejected
    assert (unrouted["path"], unrouted["status"]) == ("/nowhere", 404)
    assert unrouted["request_id"] == missing.headers["x-request-id"] == missing.json()["request_id"]


def test_settings_from_env() -> None:
    settings = EventsSettings.from_env(
        {
            "MAILROOM_EVENTS_PORT": "9101",
            "MAILROOM_EVENTS_SNS_TOPIC_ARNS": f"{LOCAL_TOPIC}, {OTHER_TOPIC},",
            "MAILROOM_EVENTS_SNS_ALLOW_HTTP": "true",
            "MAILROOM_DATABASE_URL": "postgresql://db/x",
        }
    )
    assert (settings.port, settings.sns_allow_http, settings.database_url) == (9101, True, "postgresql://db/x")
    assert settings.topic_arns == {LOCAL_TOPIC, OTHER_TOPIC}
    assert EventsSettings.from_env({}).sns_cert_host_pattern == r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
    assert EventsSettings.from_env({}).topic_arns == frozenset()
    with pytest.raises(SettingsError, match="MAILROOM_EVENTS_SNS_CERT_HOST_PATTERN"):
        EventsSettings.from_env({"MAILROOM_EVENTS_SNS_CERT_HOST_PATTERN": "(unclosed"})
    with pytest.raises(SettingsError, match="MAILROOM_EVENTS_PORT"):
        EventsSettings.from_env({"MAILROOM_EVENTS_PORT": "eighty"})
