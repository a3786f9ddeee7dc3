"""SES event → Mailroom lifecycle contract events."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from mailroom_contracts.events import (
    EmailBounced,
    EmailClicked,
    EmailComplained,
    EmailDelivered,
    EmailDeliveryDelayed,
    EmailEvent,
    EmailFailed,
    EmailOpened,
    EmailProviderAccepted,
    EmailUnsubscribed,
)
from mailroom_contracts.registry import decode_event, encode, subject_for
from mailroom_contracts.ses import TAG_EMAIL_ID, TAG_MODE, TAG_TENANT_ID
from mailroom_events.mapping import (
    MailroomRef,
    deterministic_event_id,
    mailroom_ref,
    to_lifecycle,
)
from mailroom_events.ses import SesEvent, SubscriptionDetail, TopicSubscriptionStatus, parse_ses_message
from mailroom_kit.ids import has_prefix

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "ses-sns"
if not (FIXTURES / "event-publishing").is_dir() or not (FIXTURES / "notification").is_dir():
    raise RuntimeError(f"SES/SNS fixtures not found at {FIXTURES} (a copy of shared/fixtures/ses-sns)")

NOW = datetime(2030, 1, 1, tzinfo=UTC)
OURS = {
    TAG_EMAIL_ID: ["msg_01hzy5q3k8m2n4p6r8t0v2w4x6"],
    TAG_TENANT_ID: ["ten_01hzy5q3k8m2n4p6r8t0v2w4x7"],
    TAG_MODE: ["test"],
}


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def load(name: str, tags: dict[str, list[str]] | None = None) -> SesEvent:
    event = parse_ses_message((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(event, SesEvent)
    if tags is not None:
        event = msgspec.structs.replace(event, tags={**event.tags, **tags})
    return event


def counter_factory() -> tuple[list[str], Callable[[], str]]:
    issued: list[str] = []
    counter = itertools.count()

    def factory() -> str:
        issued.append(f"evt_{next(counter):026d}")
        return issued[-1]

    return issued, factory


def one(ses: SesEvent) -> EmailEvent:
    issued: list[str] = []

    def factory() -> str:
        issued.append(f"evt_test{len(issued)}")
        return issued[-1]

    events = to_lifecycle(ses, event_id_factory=factory, now=NOW)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, EmailEvent)
    assert event.email_id == "msg_01hzy5q3k8m2n4p6r8t0v2w4x6"
    assert event.tenant_id == "ten_01hzy5q3k8m2n4p6r8t0v2w4x7"
    assert event.mode == "test"
    assert issued == [event.event_id]
    # Every produced event is a valid contract event (round-trips through the tagged union).
    assert decode_event(encode(event)) == event
    assert subject_for(event)
    return event


# --------------------------------------------------------------------------- each type, tags present


def test_send_is_provider_accepted() -> None:
    event = one(load("event-publishing/send.json", OURS))
    assert event == EmailProviderAccepted(
        event_id=event.event_id,
        occurred_at=ts("2016-10-14T05:02:16.645Z"),
        tenant_id="ten_01hzy5q3k8m2n4p6r8t0v2w4x7",
        email_id="msg_01hzy5q3k8m2n4p6r8t0v2w4x6",
        mode="test",
        provider_message_id="EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000",
    )


@pytest.mark.parametrize("name", ["event-publishing/delivery.json", "notification/delivery.json"])
def test_delivery_is_delivered(name: str) -> None:
    ses = load(name, OURS)
    event = one(ses)
    assert isinstance(event, EmailDelivered)
    assert event.occurred_at == ses.timestamp
    assert event.provider_message_id == ses.ses_message_id
    if name.startswith("event"):
        assert event.recipients == ["recipient@example.com"]
        assert event.smtp_response == "250 2.6.0 Message received"
        assert event.occurred_at == ts("2016-10-19T23:21:04.133Z")
    else:
        assert event.recipients == ["jane@example.com"]
        assert event.smtp_response == "250 ok:  Message 64111812 accepted"


BOUNCES = {
    "event-publishing/bounce-permanent.json": (
        "Permanent",
        ["recipient@example.com"],
        "smtp; 550 5.1.1 user unknown",
        "2017-08-05T00:41:02.669Z",
    ),
    "event-publishing/bounce-transient.json": (
        "Transient",
        ["user@company.com"],
        "smtp; 550-5.7.1 Unauthenticated email",
        "2019-05-17T16:40:06.766Z",
    ),
    "notification/bounce-permanent-with-dsn.json": (
        "Permanent",
        ["jane@example.com"],
        "smtp; 550 5.1.1 <jane@example.com>... User",
        "2016-01-27T14:59:38.237Z",
    ),
    "notification/bounce-permanent-without-dsn.json": (
        "Permanent",
        ["jane@example.com", "richard@example.com"],
        None,
        "2016-01-27T14:59:38.237Z",
    ),
    "notification/bounce-permanent-captured-2022.json": (
        "Permanent",
        ["bounce@simulator.amazonses.com"],
        "smtp; 550 5.1.1 user unknown",
        "2022-04-01T21:24:49.000Z",
    ),
    "notification/bounce-transient.json": (
        "Transient",
        ["frankie.lee.job@gmailabc.com"],
        "smtp; 554 4.4.7 Message expired",
        "2020-12-31T17:37:41.000Z",
    ),
}


@pytest.mark.parametrize("name", sorted(BOUNCES))
def test_bounce_is_bounced(name: str) -> None:
    bounce_type, recipients, diagnostic_prefix, when = BOUNCES[name]
    event = one(load(name, OURS))
    assert isinstance(event, EmailBounced)
    assert event.bounce_type == bounce_type
    assert event.bounce_subtype == "General"
    assert event.recipients == recipients
    assert event.occurred_at == ts(when)
    if diagnostic_prefix is None:
        assert event.diagnostic_code is None
    else:
        assert event.diagnostic_code is not None and event.diagnostic_code.startswith(diagnostic_prefix)


def test_undetermined_bounce_and_first_diagnostic_code() -> None:
    raw = json.loads((FIXTURES / "notification/bounce-permanent-without-dsn.json").read_text())
    raw["bounce"]["bounceType"] = "Undetermined"
    raw["bounce"]["bounceSubType"] = "Undetermined"
    raw["bounce"]["bouncedRecipients"][1]["diagnosticCode"] = "smtp; 550 second"
    raw["mail"]["tags"] = OURS
    ses = parse_ses_message(json.dumps(raw))
    assert isinstance(ses, SesEvent)
    event = one(ses)
    assert isinstance(event, EmailBounced)
    assert (event.bounce_type, event.bounce_subtype) == ("Undetermined", "Undetermined")
    assert event.diagnostic_code == "smtp; 550 second"  # the first recipient had none
    # ... and each recipient keeps its own (issue 22).
    assert [(r.email, r.diagnostic_code) for r in event.bounced_recipients] == [
        ("jane@example.com", None),
        ("richard@example.com", "smtp; 550 second"),
    ]


def test_bounce_keeps_each_recipients_action_status_and_diagnostic() -> None:
    event = one(load("event-publishing/bounce-permanent.json", OURS))
    assert isinstance(event, EmailBounced)
    [recipient] = event.bounced_recipients
    assert recipient.email == "recipient@example.com"
    assert (recipient.action, recipient.status) == ("failed", "5.1.1")
    assert recipient.diagnostic_code is not None and recipient.diagnostic_code.startswith("smtp; 550 5.1.1")
    assert decode_event(encode(event)) == event


COMPLAINTS = {
    "event-publishing/complaint.json": (["recipient@example.com"], "abuse", "2017-08-05T00:41:02.669Z"),
    "event-publishing/complaint-captured-2022.json": (
        ["complaint@simulator.amazonses.com"],
        "abuse",
        "2022-03-28T23:59:33.564Z",
    ),
    "notification/complaint-captured-2017.json": (
        ["complaint@simulator.amazonses.com"],
        "abuse",
        "2017-07-21T18:47:12.000Z",
    ),
    "notification/complaint-with-feedback-report.json": (
        ["richard@example.com"],
        "abuse",
        "2016-01-27T14:59:38.237Z",
    ),
    "notification/complaint-without-feedback-report.json": (
        ["richard@example.com"],
        None,
        "2016-01-27T14:59:38.237Z",
    ),
}


@pytest.mark.parametrize("name", sorted(COMPLAINTS))
def test_complaint_is_complained(name: str) -> None:
    recipients, feedback_type, when = COMPLAINTS[name]
    ses = load(name, OURS)
    event = one(ses)
    assert isinstance(event, EmailComplained)
    assert event.recipients == recipients
    assert event.feedback_type == feedback_type
    assert event.occurred_at == ts(when)
    assert event.provider_message_id == ses.ses_message_id


def test_delivery_delay_is_delivery_delayed() -> None:
    event = one(load("event-publishing/delivery-delay.json", OURS))
    assert isinstance(event, EmailDeliveryDelayed)
    assert event.recipients == ["recipient@example.com"]
    assert event.delay_type == "TransientCommunicationFailure"
    assert event.occurred_at == ts("2020-06-16T00:25:40.095Z")
    assert event.provider_message_id == "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"


def test_reject_is_failed_provider_rejected() -> None:
    event = one(load("event-publishing/reject.json", OURS))
    assert isinstance(event, EmailFailed)
    assert event.reason == "provider_rejected"
    assert event.message == "Bad content"
    assert event.occurred_at == ts("2016-10-14T17:38:15.211Z")  # mail timestamp: reject has none


def test_rendering_failure_is_failed_rendering_failure() -> None:
    event = one(load("event-publishing/rendering-failure.json", OURS))
    assert isinstance(event, EmailFailed)
    assert event.reason == "rendering_failure"
    assert "MyTemplate" in event.message
    assert "Attribute 'attributeName' is not present in the rendering data." in event.message
    assert event.occurred_at == ts("2018-01-22T18:43:06.197Z")


def test_open_maps_to_email_opened_with_ip_and_user_agent() -> None:
    event = one(load("event-publishing/open.json", OURS))
    assert isinstance(event, EmailOpened)
    assert (event.email_id, event.tenant_id, event.mode) == (OURS[TAG_EMAIL_ID][0], OURS[TAG_TENANT_ID][0], "test")
    assert event.ip == "192.0.2.1"
    assert event.user_agent is not None and event.user_agent.startswith("Mozilla/5.0 (iPhone;")
    assert event.occurred_at == ts("2017-08-09T22:00:19.652Z")
    assert subject_for(event) == "mailroom.email.opened"
    assert decode_event(encode(event)) == event


def test_click_maps_to_email_clicked_with_link_ip_user_agent_and_tags() -> None:
    event = one(load("event-publishing/click.json", OURS))
    assert isinstance(event, EmailClicked)
    assert event.link == "http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html"
    assert event.ip == "192.0.2.1"
    assert event.user_agent is not None and "Chrome/60" in event.user_agent
    assert event.link_tags  # the fixture's linkTags, kept
    assert event.occurred_at == ts("2017-08-09T23:51:25.570Z")
    assert subject_for(event) == "mailroom.email.clicked"
    assert decode_event(encode(event)) == event


def test_subscription_opt_out_maps_to_email_unsubscribed() -> None:
    event = one(load("event-publishing/subscription.json", OURS))
    assert isinstance(event, EmailUnsubscribed)
    assert event.recipients == ["recipient@example.com"]
    assert (event.source, event.contact_list, event.unsubscribe_all) == ("UnsubscribeHeader", "ContactListName", True)
    assert event.topics == ["ExampleTopicName"]
    assert event.occurred_at == ts("2022-01-12T01:00:17.910Z")
    assert subject_for(event) == "mailroom.email.unsubscribed"
    assert decode_event(encode(event)) == event


def test_subscription_without_an_opt_out_is_ignored() -> None:
    ses = load("event-publishing/subscription.json", OURS)
    assert isinstance(ses.detail, SubscriptionDetail) and ses.detail.new_topic_preferences is not None
    opted_in = msgspec.structs.replace(
        ses.detail.new_topic_preferences,
        unsubscribe_all=False,
        topic_subscription_status=[TopicSubscriptionStatus(topic_name="News", subscription_status="OptIn")],
    )
    ses = msgspec.structs.replace(ses, detail=msgspec.structs.replace(ses.detail, new_topic_preferences=opted_in))
    issued, factory = counter_factory()
    assert to_lifecycle(ses, event_id_factory=factory, now=NOW) == []
    assert issued == []


# --------------------------------------------------------------------------- tags absent / partial

ALL_FILES = sorted(
    f"{p.parent.name}/{p.name}"
    for folder in ("event-publishing", "notification")
    for p in (FIXTURES / folder).glob("*.json")
)


@pytest.mark.parametrize("name", ALL_FILES)
def test_without_mailroom_tags_nothing_is_emitted(name: str) -> None:
    ses = load(name)
    assert mailroom_ref(ses) is None
    issued, factory = counter_factory()
    assert to_lifecycle(ses, event_id_factory=factory, now=NOW) == []
    assert to_lifecycle(ses, event_id_factory=factory, now=NOW, source_id="m-1") == []
    assert issued == []


@pytest.mark.parametrize(
    "tags",
    [
        {TAG_EMAIL_ID: ["msg_x"]},  # no tenant
        {TAG_TENANT_ID: ["ten_x"]},  # no email
        {TAG_EMAIL_ID: [], TAG_TENANT_ID: ["ten_x"]},
        {TAG_EMAIL_ID: [""], TAG_TENANT_ID: ["ten_x"]},
        {TAG_EMAIL_ID: ["msg_x"], TAG_TENANT_ID: ["ten_x"], TAG_MODE: ["production"]},
    ],
)
def test_partial_or_foreign_tags_are_not_ours(tags: dict[str, list[str]]) -> None:
    ses = load("event-publishing/delivery.json", tags)
    assert mailroom_ref(ses) is None
    assert to_lifecycle(ses, event_id_factory=lambda: "evt_x", now=NOW) == []


def test_mode_defaults_to_live_and_first_value_wins() -> None:
    ses = load("event-publishing/send.json", {TAG_EMAIL_ID: ["msg_a", "msg_b"], TAG_TENANT_ID: ["ten_a"]})
    assert mailroom_ref(ses) == MailroomRef(email_id="msg_a", tenant_id="ten_a", mode="live")
    events = to_lifecycle(ses, event_id_factory=lambda: "evt_1", now=NOW)
    assert len(events) == 1 and isinstance(events[0], EmailProviderAccepted)
    assert (events[0].email_id, events[0].mode) == ("msg_a", "live")


# --------------------------------------------------------------------------- ids and time


def test_ids_are_deterministic_with_source_id() -> None:
    mapped: dict[str, str] = {}
    for name in ALL_FILES:
        ses = load(name, OURS)

        def fail() -> str:
            raise AssertionError("factory must not be used when source_id is given")

        first = to_lifecycle(ses, event_id_factory=fail, now=NOW, source_id="sns-" + name)
        again = to_lifecycle(ses, event_id_factory=fail, now=NOW + timedelta(hours=1), source_id="sns-" + name)
        assert first == again  # a redelivered SNS message maps to the very same events
        for event in first:
            assert has_prefix(event.event_id, "evt")
            assert event.event_id == deterministic_event_id("sns-" + name, 0, ses.timestamp)
            mapped[name] = event.event_id
    assert len(set(mapped.values())) == len(mapped) == len(ALL_FILES)


def test_deterministic_ids_differ_by_source_and_index_and_sort_by_time() -> None:
    t = ts("2022-03-28T23:59:33.564Z")
    a = deterministic_event_id("97903a0c-8818-5442-94b2-60b0c63d3da0", 0, t)
    assert a == deterministic_event_id("97903a0c-8818-5442-94b2-60b0c63d3da0", 0, t)
    assert a != deterministic_event_id("97903a0c-8818-5442-94b2-60b0c63d3da1", 0, t)
    assert a != deterministic_event_id("97903a0c-8818-5442-94b2-60b0c63d3da0", 1, t)
    assert has_prefix(a, "evt")
    later = deterministic_event_id("00000000", 0, t + timedelta(milliseconds=1))
    earlier = deterministic_event_id("ffffffff", 0, t - timedelta(milliseconds=1))
    assert earlier < a < later


def test_factory_used_without_source_id() -> None:
    ses = load("notification/delivery.json", OURS)
    issued, factory = counter_factory()
    first = to_lifecycle(ses, event_id_factory=factory, now=NOW)
    second = to_lifecycle(ses, event_id_factory=factory, now=NOW)
    assert [e.event_id for e in first + second] == issued == [f"evt_{0:026d}", f"evt_{1:026d}"]


def test_future_ses_timestamp_is_clamped_to_now() -> None:
    ses = load("notification/delivery.json", OURS)
    now = ts("2016-01-27T14:59:00Z")  # before the SES delivery timestamp (clock skew)
    events = to_lifecycle(ses, event_id_factory=lambda: "evt_1", now=now)
    assert events[0].occurred_at == now
    # ids stay derived from the SES timestamp, so they do not depend on the clock
    a = to_lifecycle(ses, event_id_factory=lambda: "evt_1", now=now, source_id="m")
    b = to_lifecycle(ses, event_id_factory=lambda: "evt_1", now=NOW, source_id="m")
    assert a[0].event_id == b[0].event_id
