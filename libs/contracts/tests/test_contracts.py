"""Contracts round-trip, are registered once per subject, and evolve safely (SPEC §3)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from mailroom_contracts import (
    dead_letters,
    decode,
    decode_event,
    encode,
    events,
    is_unknown_event_type,
    peek_type,
    rpc,
    streams,
    subject_for,
    subjects,
)
from mailroom_contracts.registry import KNOWN_EVENT_TAGS, UnknownSubjectError, event_type_for_subject

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SNAPSHOT = events.DomainSnapshot(
    domain_id="dom_1",
    tenant_id="ten_1",
    name="example.test",
    status="pending",
    region="us-east-1",
    mail_from_domain="bounce.example.test",
    created_at=NOW,
    records=[
        events.DomainRecord(
            purpose="dkim", type="CNAME", name="a._domainkey.example.test", value="a.dkim.amazonses.com"
        )
    ],
)
BASE: dict[str, Any] = {"event_id": "evt_1", "occurred_at": NOW, "tenant_id": "ten_1"}
EMAIL: dict[str, Any] = {**BASE, "email_id": "msg_1", "mode": "test"}
SAMPLES: list[events.Event] = [
    events.EmailQueued(
        **EMAIL,
        from_=events.Address(email="a@example.test", name="Ä"),
        to=[events.Address(email="b@example.test")],
        subject="Hi",
        text="x",
        tags={"k": "v"},
        metadata={"order": 1},
        created_at=NOW,
    ),
    events.EmailSent(**EMAIL, provider="ses", provider_message_id="p1", recipients=["b@example.test"]),
    events.EmailFailed(**EMAIL, reason="provider_rejected", message="no"),
    events.EmailDelivered(**EMAIL, recipients=["b@example.test"]),
    events.EmailBounced(**EMAIL, recipients=["b@example.test"], bounce_type="Permanent", bounce_subtype="General"),
    events.EmailComplained(**EMAIL, recipients=["b@example.test"], feedback_type="abuse"),
    events.EmailDeliveryDelayed(**EMAIL, recipients=["b@example.test"], delay_type="MailboxFull"),
    events.EmailProviderAccepted(**EMAIL, provider_message_id="p1"),
    events.EmailScheduled(
        **EMAIL,
        from_=events.Address(email="a@example.test"),
        to=[events.Address(email="b@example.test")],
        subject="Later",
        created_at=NOW,
        scheduled_at=NOW,
    ),
    events.EmailCanceled(**EMAIL, scheduled_at=NOW),
    events.EmailOpened(**EMAIL, ip="192.0.2.1", user_agent="Mozilla/5.0", provider_message_id="ses-1"),
    events.EmailClicked(**EMAIL, link="https://example.test/a?b=1", ip="192.0.2.1", link_tags={"k": ["v"]}),
    events.EmailUnsubscribed(**EMAIL, recipients=["a@example.test"], source="UnsubscribeHeader", unsubscribe_all=True),
    events.DomainCreated(**BASE, domain=SNAPSHOT),
    events.DomainVerified(**BASE, domain=SNAPSHOT),
    events.DomainFailed(**BASE, domain=SNAPSHOT, reason="timeout"),
    events.DomainStatusChanged(**BASE, domain=SNAPSHOT, previous_status="verified"),
    events.EmailSuppressed(**EMAIL, recipients=[events.SuppressedRecipient(email="b@example.test", reason="bounce")]),
    events.DomainUpdated(**BASE, domain=SNAPSHOT),
    events.DomainDeleted(
        **BASE,
        domain=msgspec.structs.replace(
            SNAPSHOT,
            records=[
                msgspec.structs.replace(
                    SNAPSHOT.records[0],
                    status="failed",
                    found=["b.example.test"],
                    detail="points elsewhere",
                    last_checked_at=NOW,
                )
            ],
        ),
    ),
    events.TenantUpdated(
        **BASE, status="paused", status_reason="bounce rate 6.1%", updated_at=datetime(2026, 1, 1, tzinfo=UTC)
    ),
    events.WebhookDisabled(
        **BASE,
        webhook_id="wh_01",
        reason="failing",
        disabled_at=NOW,
        failing_since=datetime(2025, 12, 27, tzinfo=UTC),
        last_status_code=503,
        last_error="http_503",
    ),
]


def test_every_event_type_has_a_sample() -> None:
    assert {type(s) for s in SAMPLES} == set(events.ALL_EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip_by_tag_and_by_type(event: events.Event) -> None:
    data = encode(event)
    assert decode_event(data) == event
    assert decode(data, type(event)) == event
    assert event_type_for_subject(subject_for(event)) is type(event)
    assert subject_for(event).startswith("mailroom.")


def test_queued_uses_the_wire_name_from() -> None:
    wire = msgspec.json.decode(encode(SAMPLES[0]))
    assert wire["type"] == "email.queued" and wire["from"]["email"] == "a@example.test" and "from_" not in wire


def test_subjects_are_unique_and_inside_their_stream() -> None:
    all_subjects = [subject_for(s) for s in SAMPLES]
    assert len(set(all_subjects)) == len(all_subjects)
    for subject in all_subjects:
        owners = [st for st in streams.STREAMS if any(subject.startswith(p.rstrip(">")) for p in st.subjects)]
        assert len(owners) == 1, subject
    for consumer in streams.CONSUMERS:
        stream = next(s for s in streams.STREAMS if s.name == consumer.stream)
        for f in consumer.filter_subjects:
            assert any(f.startswith(p.rstrip(">")) for p in stream.subjects), (consumer.durable, f)
    assert len({c.durable for c in streams.CONSUMERS}) == len(streams.CONSUMERS)


def test_unknown_subject_is_an_error() -> None:
    with pytest.raises(UnknownSubjectError):
        event_type_for_subject("mailroom.email.teleported")


def test_old_reader_ignores_fields_added_later() -> None:
    """A newer producer adds an optional field; today's decoder still reads the event."""
    wire = msgspec.json.decode(encode(SAMPLES[3]))
    wire["opened_by_robot"] = True
    assert decode_event(msgspec.json.encode(wire)) == SAMPLES[3]


def test_new_reader_defaults_fields_an_old_producer_did_not_send() -> None:
    wire = msgspec.json.decode(encode(SAMPLES[1]))
    del wire["recipients"], wire["mode"]
    event = decode_event(msgspec.json.encode(wire))
    assert isinstance(event, events.EmailSent) and event.recipients == [] and event.mode == "live"


def test_required_fields_and_unknown_tags_are_refused() -> None:
    wire = msgspec.json.decode(encode(SAMPLES[3]))
    del wire["recipients"]
    with pytest.raises(msgspec.ValidationError, match="recipients"):
        decode_event(msgspec.json.encode(wire))
    wire = msgspec.json.decode(encode(SAMPLES[3]))
    wire["type"] = "email.teleported"
    with pytest.raises(msgspec.ValidationError):
        decode_event(msgspec.json.encode(wire))


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SAMPLES[1].email_id = "msg_2"  # type: ignore[attr-defined, misc]


def test_rpc_error_reply_decodes_into_every_reply_type() -> None:
    wire = msgspec.json.encode({"error": {"code": "unavailable", "message": "down", "param": None}})
    reply: type[rpc.DomainReply | rpc.CreateWebhookReply | rpc.ListWebhooksReply | rpc.WebhookReply]
    for reply in (rpc.DomainReply, rpc.CreateWebhookReply, rpc.ListWebhooksReply, rpc.WebhookReply):
        assert decode(wire, reply).error == rpc.RpcError(code="unavailable", message="down")


def test_lifecycle_subjects_exclude_internal_ones() -> None:
    assert subjects.EMAIL_PROVIDER_ACCEPTED not in subjects.EMAIL_LIFECYCLE
    assert subjects.EMAIL_QUEUED not in subjects.EMAIL_LIFECYCLE


def test_scheduling_events_are_lifecycle_and_the_email_log_does_not_follow_queued() -> None:
    assert {subjects.EMAIL_SCHEDULED, subjects.EMAIL_CANCELED} <= set(subjects.EMAIL_LIFECYCLE)
    # A plain send costs the email log nothing more: it does not follow EmailQueued.
    assert subjects.EMAIL_QUEUED not in streams.API_EMAIL_LOG.filter_subjects
    for subject in streams.API_EMAIL_LOG.filter_subjects + streams.WEBHOOKS_EMAIL.filter_subjects:
        assert subject.startswith("mailroom.email.") and subject != subjects.EMAIL_PROVIDER_ACCEPTED
    # An EmailQueued of an older producer (no scheduled_at) still decodes: not scheduled.
    wire = msgspec.json.decode(encode(SAMPLES[0]))
    wire.pop("scheduled_at")
    decoded = decode_event(msgspec.json.encode(wire))
    assert isinstance(decoded, events.EmailQueued) and decoded.scheduled_at is None


def test_unknown_event_types_are_told_apart_from_bad_data() -> None:
    future = msgspec.json.encode({"type": "email.future_thing", "event_id": "evt_9"})
    assert peek_type(future) == "email.future_thing" and is_unknown_event_type(future)
    known_but_broken = msgspec.json.encode({"type": "email.sent"})
    assert peek_type(known_but_broken) == "email.sent" and not is_unknown_event_type(known_but_broken)
    for bad in (b"{not json", b"[]", b"", b'{"type": 3}', b'{"event_id": "evt_1"}'):
        assert peek_type(bad) is None and not is_unknown_event_type(bad)
    assert all(not is_unknown_event_type(encode(s)) for s in SAMPLES)
    assert KNOWN_EVENT_TAGS == {str(t.__struct_config__.tag) for t in events.ALL_EVENT_TYPES}


def test_dead_letters_have_their_own_long_lived_stream() -> None:
    assert streams.DLQ_STREAM in streams.STREAMS
    assert streams.DLQ_STREAM.subjects == [subjects.DLQ_ALL]
    assert streams.DLQ_STREAM.max_age_seconds >= 90 * 24 * 3600
    for consumer in streams.CONSUMERS:
        subject = subjects.dlq_subject(consumer.durable)
        assert subject == f"mailroom.dlq.{consumer.durable}"
        owners = [st for st in streams.STREAMS if any(subject.startswith(p.rstrip(">")) for p in st.subjects)]
        assert owners == [streams.DLQ_STREAM]


def test_every_consumer_bounds_its_retries_but_the_server_never_stops_redelivering() -> None:
    for consumer in streams.CONSUMERS:
        assert 1 < consumer.max_deliveries < 1000, consumer.durable
        assert consumer.max_deliver == -1, consumer.durable  # the kit dead-letters; JetStream never drops
    # The webhooks' wait for a missing email summary (30 deliveries by default) ends before the dead letter.
    assert streams.WEBHOOKS_EMAIL.max_deliveries > 30


def test_dead_letter_round_trips_with_a_base64_payload() -> None:
    letter = dead_letters.DeadLetter(
        consumer="api-email-log",
        stream="MAILROOM_EMAIL",
        stream_seq=42,
        subject="mailroom.email.sent",
        payload=b"\x00\xffnot json",
        deliveries=20,
        reason="exhausted",
        error="Retry: email not yet known",
        dead_lettered_at=NOW,
        event_type="email.sent",
        event_id="evt_1",
    )
    wire = msgspec.json.decode(encode(letter))
    assert wire["payload"] == "AP9ub3QganNvbg==" and wire["reason"] == "exhausted"
    assert decode(encode(letter), dead_letters.DeadLetter) == letter
