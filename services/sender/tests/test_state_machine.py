"""The exactly-once state machine through the real handlers, Postgres and the SES emulator:
duplicates, in-doubt sends, SES Send events settling them, transient and permanent errors."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from mailroom_contracts.events import (
    EmailBounced,
    EmailComplained,
    EmailDelivered,
    EmailFailed,
    EmailProviderAccepted,
    EmailSent,
)
from mailroom_kit.consumer import Permanent, Retry
from mailroom_kit.db import Pool
from mailroom_kit.ids import new_id
from mailroom_sender.handlers import SenderHandlers
from mailroom_sender.providers import SesProvider, SimulatorProvider, make_ses_client
from mailroom_sender.service import SenderService, SendEventProgress
from mailroom_ses_emulator import EmulatorServer

from .conftest import (
    CONFIG_SET,
    BlackHole,
    closed_port_url,
    delivery_row,
    make_service,
    outbox_events,
    queued,
    redelivered,
    sent_messages,
    ses_client,
    start_emulator,
)


def accepted(email_id: str, provider_message_id: str, tenant_id: str = "ten_test") -> EmailProviderAccepted:
    return EmailProviderAccepted(
        event_id=new_id("evt"),
        occurred_at=datetime.now(UTC),
        tenant_id=tenant_id,
        email_id=email_id,
        provider_message_id=provider_message_id,
    )


def types(events: list[object]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_live_email_is_sent_once_with_one_email_sent(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer
) -> None:
    ev = queued(to=["a@example.org", "b@example.org"])
    await handlers.email_queued(ev)
    [sent] = sent_messages(emulator, ev.email_id)
    row = await delivery_row(pool, ev.email_id)
    assert row is not None
    assert row["state"] == "sent" and row["attempts"] == 1 and row["provider"] == "ses"
    assert row["provider_message_id"] == sent["message_id"]
    [event] = await outbox_events(pool, ev.email_id)
    assert isinstance(event, EmailSent)
    assert event.provider == "ses" and event.provider_message_id == sent["message_id"]
    assert event.recipients == ["a@example.org", "b@example.org"] and event.tenant_id == "ten_test"


async def test_duplicate_deliveries_send_once(handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer) -> None:
    ev = queued()
    # Concurrent redeliveries: one wins the row, the others see it in flight (Retry) or settled.
    results = await asyncio.gather(*(handlers.email_queued(redelivered(ev)) for _ in range(5)), return_exceptions=True)
    assert all(r is None or isinstance(r, Retry) for r in results), results
    await handlers.email_queued(ev)  # a later redelivery is acked as a duplicate
    await handlers.email_queued(redelivered(ev))
    assert len(sent_messages(emulator, ev.email_id)) == 1
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]


async def test_in_doubt_send_waits_then_ses_send_event_settles_it_once(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, black_hole: BlackHole
) -> None:
    hole_client = make_ses_client(
        region="us-east-1",
        endpoint_url=black_hole.url,
        read_timeout=0.5,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    hole = SesProvider(hole_client, configuration_set=CONFIG_SET, max_concurrency=2)
    ev = queued()
    # 1. SES took the request but the answer never came: in doubt, row stays `sending`.
    with pytest.raises(Retry):
        await SenderHandlers(pool, make_service(hole)).email_queued(ev)
    hole.close()
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sending" and row["attempts"] == 1
    # 2. A redelivery inside in_doubt_seconds must not send: Retry after (at most) the recheck period.
    handlers = SenderHandlers(pool, make_service(ses_provider, recheck=7.0))
    with pytest.raises(Retry) as exc:
        await handlers.email_queued(redelivered(ev))
    assert exc.value.delay == 7.0
    assert sent_messages(emulator, ev.email_id) == []
    assert (await delivery_row(pool, ev.email_id) or {})["attempts"] == 1
    # 3. SES's Send event arrives (via the events service): exactly one EmailSent.
    await handlers.provider_accepted(accepted(ev.email_id, "0100-ses-id-1"))
    await handlers.provider_accepted(accepted(ev.email_id, "0100-ses-id-1"))  # duplicate event: nothing
    [event] = await outbox_events(pool, ev.email_id)
    assert isinstance(event, EmailSent) and event.provider == "ses"
    assert event.provider_message_id == "0100-ses-id-1" and event.recipients == ["someone@example.org"]
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sent" and row["provider_message_id"] == "0100-ses-id-1"
    # 4. The queued message is then acked as a duplicate, still without a send.
    await handlers.email_queued(redelivered(ev))
    assert sent_messages(emulator, ev.email_id) == []
    assert len(await outbox_events(pool, ev.email_id)) == 1


async def test_in_doubt_remaining_delay_when_shorter_than_recheck(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, black_hole: BlackHole
) -> None:
    hole = SesProvider(
        make_ses_client(
            region="us-east-1",
            endpoint_url=black_hole.url,
            read_timeout=0.3,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ),
        configuration_set=CONFIG_SET,
        max_concurrency=2,
    )
    ev = queued()
    with pytest.raises(Retry):
        await SenderHandlers(pool, make_service(hole, in_doubt_seconds=5)).email_queued(ev)
    hole.close()
    with pytest.raises(Retry) as exc:
        await SenderHandlers(pool, make_service(ses_provider, in_doubt_seconds=5)).email_queued(ev)
    assert exc.value.delay is not None and 3.0 < exc.value.delay <= 5.0
    assert sent_messages(emulator, ev.email_id) == []


async def test_in_doubt_timeout_resends_at_least_once(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, black_hole: BlackHole
) -> None:
    hole = SesProvider(
        make_ses_client(
            region="us-east-1",
            endpoint_url=black_hole.url,
            read_timeout=0.3,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        ),
        configuration_set=CONFIG_SET,
        max_concurrency=2,
    )
    ev = queued()
    with pytest.raises(Retry):
        await SenderHandlers(pool, make_service(hole, in_doubt_seconds=0.5)).email_queued(ev)
    hole.close()
    await asyncio.sleep(0.6)
    handlers = SenderHandlers(pool, make_service(ses_provider, in_doubt_seconds=0.5))
    await handlers.email_queued(redelivered(ev))
    assert len(sent_messages(emulator, ev.email_id)) == 1
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sent" and row["attempts"] == 2
    # A late Send event for the first attempt changes nothing: still one EmailSent.
    await handlers.provider_accepted(accepted(ev.email_id, "late-id"))
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]


async def test_send_event_winning_the_race_leaves_tx2_a_no_op(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer
) -> None:
    """The Send event is processed between the SES call and TX2: TX2 publishes nothing more."""
    ev = queued()
    prepared = handlers._service.prepare(ev)  # drive the steps by hand to interleave them
    async with pool.connection() as conn, conn.transaction():
        begin = await handlers._service.begin(conn, ev, prepared)
    result = await handlers._service.send(ev, prepared)
    await handlers.provider_accepted(accepted(ev.email_id, result.message_id))
    async with pool.connection() as conn, conn.transaction():
        assert await handlers._service.record_sent(conn, ev, result) is False
    assert begin is not None
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]
    assert len(sent_messages(emulator, ev.email_id)) == 1


async def test_transient_error_puts_row_back_to_pending_and_retries(pool: Pool, emulator: EmulatorServer) -> None:
    throttled_server = start_emulator(enforce_send_rate=True, max_send_rate=0)
    throttled = SesProvider(ses_client(throttled_server.url), configuration_set=CONFIG_SET, max_concurrency=2)
    refused = SesProvider(ses_client(closed_port_url()), configuration_set=CONFIG_SET, max_concurrency=2)
    working = SesProvider(ses_client(emulator.url), configuration_set=CONFIG_SET, max_concurrency=2)
    ev = queued()
    try:
        for attempt, provider in enumerate((throttled, refused), start=1):
            with pytest.raises(Retry):
                await SenderHandlers(pool, make_service(provider)).email_queued(redelivered(ev))
            row = await delivery_row(pool, ev.email_id)
            assert row is not None and row["state"] == "pending" and row["attempts"] == attempt
            assert await outbox_events(pool, ev.email_id) == []
        # Not in doubt: the next delivery sends immediately.
        await SenderHandlers(pool, make_service(working)).email_queued(redelivered(ev))
    finally:
        for p in (throttled, refused, working):
            p.close()
        throttled_server.stop()
    assert len(sent_messages(emulator, ev.email_id)) == 1
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sent" and row["attempts"] == 3
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]


async def test_permanent_rejection_fails_once(handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer) -> None:
    ev = queued(from_email="noreply@unverified.test")
    await handlers.email_queued(ev)
    await handlers.email_queued(redelivered(ev))
    [event] = await outbox_events(pool, ev.email_id)
    assert isinstance(event, EmailFailed)
    assert event.reason == "message_rejected" and "not verified" in event.message
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "failed" and row["failure_reason"] == "message_rejected"
    assert row["attempts"] == 1
    assert sent_messages(emulator, ev.email_id) == []


async def test_unbuildable_message_fails_without_sending(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer
) -> None:
    ev = queued(headers={"X-Evil": "1\r\nBcc: victim@example.org"})
    await handlers.email_queued(ev)
    [event] = await outbox_events(pool, ev.email_id)
    assert isinstance(event, EmailFailed) and event.reason == "invalid_message"
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "failed" and row["attempts"] == 0
    assert sent_messages(emulator, ev.email_id) == []


async def test_test_mode_outcomes_in_the_same_transaction(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer
) -> None:
    ev = queued(
        mode="test",
        from_email="noreply@unverified-is-fine.test",
        to=[
            "success@simulator.amazonses.com",
            "bounce@simulator.amazonses.com",
            "complaint@simulator.amazonses.com",
            "suppressionlist@simulator.amazonses.com",
        ],
    )
    await handlers.email_queued(ev)
    await handlers.email_queued(redelivered(ev))
    events = await outbox_events(pool, ev.email_id)
    assert types(events) == ["EmailSent", "EmailDelivered", "EmailBounced", "EmailBounced", "EmailComplained"]
    sent, delivered, bounced, listed, complained = events
    assert isinstance(sent, EmailSent) and sent.provider == "simulator" and sent.mode == "test"
    assert sent.provider_message_id.startswith("sim-")
    assert isinstance(delivered, EmailDelivered)
    assert delivered.recipients == ["success@simulator.amazonses.com", "complaint@simulator.amazonses.com"]
    assert isinstance(bounced, EmailBounced) and bounced.recipients == ["bounce@simulator.amazonses.com"]
    assert bounced.bounce_type == "Permanent" and bounced.bounce_subtype == "General"
    assert isinstance(listed, EmailBounced) and listed.bounce_subtype == "OnAccountSuppressionList"
    assert isinstance(complained, EmailComplained)
    assert complained.recipients == ["complaint@simulator.amazonses.com"]
    assert all(
        e.mode == "test" and e.provider_message_id == sent.provider_message_id  # type: ignore[attr-defined]
        for e in events
    )
    assert sent_messages(emulator, ev.email_id) == []
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["provider"] == "simulator" and row["state"] == "sent"


async def test_test_mode_attempt_cut_short_is_simply_rerun(
    handlers: SenderHandlers, pool: Pool, emulator: EmulatorServer
) -> None:
    """A crash between TX1 and TX2 of a test-mode email: no SES involved, so no waiting."""
    ev = queued(mode="test", to=["ooto@simulator.amazonses.com"])
    prepared = handlers._service.prepare(ev)
    async with pool.connection() as conn, conn.transaction():
        await handlers._service.begin(conn, ev, prepared)  # TX1 committed, then "crash"
    await handlers.email_queued(redelivered(ev))
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent", "EmailDelivered"]
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sent" and row["attempts"] == 2


async def test_send_event_for_unknown_email_is_ignored(handlers: SenderHandlers, pool: Pool) -> None:
    email_id = new_id("msg")
    await handlers.provider_accepted(accepted(email_id, "whatever"))
    assert await delivery_row(pool, email_id) is None
    assert await outbox_events(pool, email_id) == []


async def test_send_event_after_a_transient_failure_prevents_a_resend(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer
) -> None:
    """SES reports a Send for an attempt we classified as not sent: trust SES, do not send again."""
    refused = SesProvider(ses_client(closed_port_url()), configuration_set=CONFIG_SET, max_concurrency=2)
    ev = queued()
    with pytest.raises(Retry):
        await SenderHandlers(pool, make_service(refused)).email_queued(ev)
    refused.close()
    handlers = SenderHandlers(pool, make_service(ses_provider))
    await handlers.provider_accepted(accepted(ev.email_id, "0100-from-ses"))
    await handlers.email_queued(redelivered(ev))
    assert sent_messages(emulator, ev.email_id) == []
    [event] = await outbox_events(pool, ev.email_id)
    assert isinstance(event, EmailSent) and event.provider_message_id == "0100-from-ses"


async def test_an_event_the_consumer_does_not_follow_is_permanent(handlers: SenderHandlers, pool: Pool) -> None:
    """Bad data can never succeed: the kit dead-letters it instead of retrying or dropping it."""
    ev = queued(to=["someone@example.org"])
    with pytest.raises(Permanent, match=r"email\.provider_accepted on the queued consumer"):
        await handlers.email_queued(accepted(ev.email_id, "pm"))
    with pytest.raises(Permanent, match=r"email\.queued on the provider_accepted consumer"):
        await handlers.provider_accepted(ev)
    assert await delivery_row(pool, ev.email_id) is None
    assert await outbox_events(pool, ev.email_id) == []


def black_hole_provider(black_hole: BlackHole) -> SesProvider:
    client = make_ses_client(
        region="us-east-1",
        endpoint_url=black_hole.url,
        read_timeout=0.3,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    return SesProvider(client, configuration_set=CONFIG_SET, max_concurrency=2)


def early_service(ses: SesProvider, send_events: SendEventProgress | None = None) -> SenderService:
    """In doubt for 600 s, but re-sent early once Send events for sends accepted 0.3 s after the
    attempt started have been seen for 0.4 s."""
    return SenderService(
        ses=ses,
        simulator=SimulatorProvider(),
        in_doubt_seconds=600,
        in_doubt_recheck_seconds=5,
        in_doubt_grace_seconds=0.4,
        attempt_max_seconds=0.3,
        send_events=send_events,
    )


async def test_in_doubt_send_is_resent_early_once_when_later_send_events_arrive(
    pool: Pool, ses_provider: SesProvider, emulator: EmulatorServer, black_hole: BlackHole
) -> None:
    hole = black_hole_provider(black_hole)
    ev = queued()
    # 1. The request went out, no answer: in doubt.
    in_doubt = SenderHandlers(pool, early_service(hole))
    with pytest.raises(Retry):
        await in_doubt.email_queued(ev)
    service = early_service(ses_provider)
    handlers = SenderHandlers(pool, service)
    # 2. No Send event seen yet (e.g. just restarted): it waits, as for the full timeout.
    with pytest.raises(Retry):
        await handlers.email_queued(redelivered(ev))
    # 3. A later send's Send event, but SES accepted it while the attempt's own call could still
    # have been going on: ours may still be on its way. Waits.
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sending"
    during_the_call = row["attempt_started_at"] + timedelta(seconds=0.2)
    await handlers.provider_accepted(
        msgspec.structs.replace(accepted(new_id("msg"), "other-1"), occurred_at=during_the_call)
    )
    await asyncio.sleep(0.5)
    with pytest.raises(Retry):
        await handlers.email_queued(redelivered(ev))
    # 4. One accepted after the attempt's call must have ended, but seen only just now: waits.
    await handlers.provider_accepted(accepted(new_id("msg"), "other-2"))
    with pytest.raises(Retry):
        await handlers.email_queued(redelivered(ev))
    assert sent_messages(emulator, ev.email_id) == []
    # 5. Still nothing for ours after the grace: re-sent now, not after 600 s.
    await asyncio.sleep(0.5)
    await handlers.email_queued(redelivered(ev))
    assert len(sent_messages(emulator, ev.email_id)) == 1
    row = await delivery_row(pool, ev.email_id)
    assert row is not None and row["state"] == "sent" and row["attempts"] == 2 and row["resent_early"]
    assert types(await outbox_events(pool, ev.email_id)) == ["EmailSent"]

    # At most once: a second in-doubt attempt of the same email waits the full timeout.
    ev2 = queued()
    with pytest.raises(Retry):
        await in_doubt.email_queued(ev2)
    await asyncio.sleep(0.5)
    await handlers.provider_accepted(accepted(new_id("msg"), "other-3"))
    await asyncio.sleep(0.5)
    # The early resend goes out and is in doubt again ...
    with pytest.raises(Retry, match="outcome unknown"):
        await SenderHandlers(pool, early_service(hole, service.send_events)).email_queued(redelivered(ev2))
    row = await delivery_row(pool, ev2.email_id)
    assert row is not None and row["state"] == "sending" and row["attempts"] == 2 and row["resent_early"]
    # ... and however many later Send events arrive, it now waits for its timeout.
    await asyncio.sleep(0.5)
    await handlers.provider_accepted(accepted(new_id("msg"), "other-4"))
    await asyncio.sleep(0.5)
    with pytest.raises(Retry):
        await handlers.email_queued(redelivered(ev2))
    assert (await delivery_row(pool, ev2.email_id) or {})["attempts"] == 2
    hole.close()


def test_send_event_progress_counts_an_event_only_after_the_grace() -> None:
    now = [100.0]
    progress = SendEventProgress(30, clock=lambda: now[0])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    progress.saw(t0)
    assert progress.accepted_since_grace() is None
    now[0] = 120.0
    progress.saw(t0.replace(second=10))
    progress.saw(t0.replace(second=5))  # older than one already seen: never the latest
    now[0] = 130.0
    assert progress.accepted_since_grace() == t0
    now[0] = 150.0
    assert progress.accepted_since_grace() == t0.replace(second=10)
    progress.saw(t0.replace(second=1))
    assert progress.accepted_since_grace() == t0.replace(second=10)
