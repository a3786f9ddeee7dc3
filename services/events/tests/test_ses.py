"""Parsing every SES payload in tests/fixtures/ses-sns (a copy of shared/fixtures/ses-sns):
both formats, every type."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from mailroom_events.ses import (
    TOPIC_VALIDATION_TEXT,
    BounceDetail,
    BouncedRecipient,
    ClickDetail,
    ComplaintDetail,
    DelayedRecipient,
    DeliveryDelayDetail,
    DeliveryDetail,
    OpenDetail,
    RejectDetail,
    RenderingFailureDetail,
    SendDetail,
    SesEvent,
    SesParseError,
    SubscriptionDetail,
    TopicPreferences,
    TopicSubscriptionStatus,
    parse_ses_message,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "ses-sns"
if not (FIXTURES / "event-publishing").is_dir() or not (FIXTURES / "notification").is_dir():
    raise RuntimeError(f"SES/SNS fixtures not found at {FIXTURES} (a copy of shared/fixtures/ses-sns)")


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


EXAMPLE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
DOC_TAGS = {
    "ses:configuration-set": ["ConfigSet"],
    "ses:source-ip": ["192.0.2.0"],
    "ses:from-domain": ["example.com"],
    "ses:caller-identity": ["ses_user"],
}
CUSTOM_TAGS = {"myCustomTag1": ["myCustomTagValue1"], "myCustomTag2": ["myCustomTagValue2"]}
NT_DESTINATION = ["jane@example.com", "mary@example.com", "richard@example.com"]

# file → (expected top-level fields, expected detail)
EXPECTED: dict[str, tuple[dict[str, Any], Any]] = {
    "event-publishing/bounce-permanent.json": (
        {
            "event_type": "bounce",
            "format": "event_publishing",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2017-08-05T00:40:02.012Z"),
            "source": "Sender Name <sender@example.com>",
            "destination": ["recipient@example.com"],
            "subject": "Message sent from Amazon SES",
            "tags": DOC_TAGS,
            "timestamp": ts("2017-08-05T00:41:02.669Z"),
        },
        BounceDetail(
            bounce_type="Permanent",
            bounce_subtype="General",
            recipients=[
                BouncedRecipient(
                    email="recipient@example.com",
                    action="failed",
                    status="5.1.1",
                    diagnostic_code="smtp; 550 5.1.1 user unknown",
                )
            ],
            timestamp=ts("2017-08-05T00:41:02.669Z"),
            feedback_id="01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
            reporting_mta="dsn; mta.example.com",
        ),
    ),
    "event-publishing/bounce-transient.json": (
        {
            "event_type": "bounce",
            "format": "event_publishing",
            "ses_message_id": "msgid-000000",
            "mail_timestamp": ts("2019-05-17T16:40:05.939Z"),
            "source": "archivehunter@deploydomain.co.uk",
            "destination": ["user@company.com"],
            "subject": "Test one",
            "tags": {
                "ses:operation": ["SendTemplatedEmail"],
                "ses:configuration-set": ["SESConfigurationSet-DFsgSHGDH"],
                "ses:source-ip": ["11.22.33.44"],
                "ses:from-domain": ["deploydomain.co.uk"],
            },
            "timestamp": ts("2019-05-17T16:40:06.766Z"),
        },
        BounceDetail(
            bounce_type="Transient",
            bounce_subtype="General",
            recipients=[
                BouncedRecipient(
                    email="user@company.com",
                    action="failed",
                    status="5.7.1",
                    diagnostic_code=(
                        "smtp; 550-5.7.1 Unauthenticated email from deploydomain.co.uk "
                        "is not accepted due to\n"
                        "550-5.7.1 domain's DMARC policy. Please contact the administrator of\n"
                        "550-5.7.1 deploydomain.co.uk domain if this was a legitimate mail. Please visit\n"
                        "550-5.7.1  https://support.google.com/mail/answer/2451690 to learn about the\n"
                        "550 5.7.1 DMARC initiative."
                    ),
                )
            ],
            timestamp=ts("2019-05-17T16:40:06.766Z"),
            feedback_id="someid-000000",
            reporting_mta="dsn; a7-23.smtp-out.eu-west-1.amazonses.com",
        ),
    ),
    "event-publishing/click.json": (
        {
            "event_type": "click",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2017-08-09T23:50:05.795Z"),
            "source": "sender@example.com",
            "destination": ["recipient@example.com"],
            "subject": "Message sent from Amazon SES",
            "timestamp": ts("2017-08-09T23:51:25.570Z"),
        },
        ClickDetail(
            timestamp=ts("2017-08-09T23:51:25.570Z"),
            link="http://docs.aws.amazon.com/ses/latest/DeveloperGuide/send-email-smtp.html",
            ip_address="192.0.2.1",
            user_agent=(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/60.0.3112.90 Safari/537.36"
            ),
            link_tags={"samplekey0": ["samplevalue0"], "samplekey1": ["samplevalue1"]},
        ),
    ),
    "event-publishing/complaint-captured-2022.json": (
        {
            "event_type": "complaint",
            "ses_message_id": "0100017fd2f875c4-c2929163-2767-49b1-8513-1a29e428e134-000000",
            "mail_timestamp": ts("2022-03-28T23:59:32.804Z"),
            "source": "jesus.islasf@alumno.buap.mx",
            "destination": ["complaint@simulator.amazonses.com"],
            "subject": "Complaint Notification",
            "timestamp": ts("2022-03-28T23:59:33.564Z"),
        },
        ComplaintDetail(
            recipients=["complaint@simulator.amazonses.com"],
            timestamp=ts("2022-03-28T23:59:33.564Z"),
            feedback_type="abuse",
            complaint_subtype=None,
            feedback_id="0100017fd2f87864-7f070191-4eb1-49e3-a42e-7e996b718724-000000",
            user_agent="Amazon SES Mailbox Simulator",
            arrival_date="2022-03-28T23:59:33.564Z",
        ),
    ),
    "event-publishing/complaint.json": (
        {
            "event_type": "complaint",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2017-08-05T00:40:01.123Z"),
            "source": "Sender Name <sender@example.com>",
            "tags": DOC_TAGS,
            "timestamp": ts("2017-08-05T00:41:02.669Z"),
        },
        ComplaintDetail(
            recipients=["recipient@example.com"],
            timestamp=ts("2017-08-05T00:41:02.669Z"),
            feedback_type="abuse",
            feedback_id="01000157c44f053b-61b59c11-9236-11e6-8f96-7be8aexample-000000",
            user_agent=(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/60.0.3112.90 Safari/537.36"
            ),
            arrival_date="2017-08-05T00:41:02.669Z",
        ),
    ),
    "event-publishing/delivery-delay.json": (
        {
            "event_type": "delivery_delay",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2020-06-16T00:15:40.641Z"),
            "source": "sender@example.com",
            "destination": ["recipient@example.com"],
            "subject": None,
            "tags": {"ses:configuration-set": ["ConfigSet"]},
            "timestamp": ts("2020-06-16T00:25:40.095Z"),
        },
        DeliveryDelayDetail(
            timestamp=ts("2020-06-16T00:25:40.095Z"),
            delay_type="TransientCommunicationFailure",
            recipients=[
                DelayedRecipient(
                    email="recipient@example.com",
                    status="4.4.1",
                    diagnostic_code="smtp; 421 4.4.1 Unable to connect to remote host",
                )
            ],
            expiration_time=ts("2020-06-16T00:25:40.914Z"),
        ),
    ),
    "event-publishing/delivery.json": (
        {
            "event_type": "delivery",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2016-10-19T23:20:52.240Z"),
            "source": "sender@example.com",
            "subject": "Message sent from Amazon SES",
            "tags": {**DOC_TAGS, "ses:outgoing-ip": ["192.0.2.0"], **CUSTOM_TAGS},
            "timestamp": ts("2016-10-19T23:21:04.133Z"),
        },
        DeliveryDetail(
            timestamp=ts("2016-10-19T23:21:04.133Z"),
            recipients=["recipient@example.com"],
            processing_time_millis=11893,
            smtp_response="250 2.6.0 Message received",
            reporting_mta="mta.example.com",
        ),
    ),
    "event-publishing/open.json": (
        {
            "event_type": "open",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2017-08-09T21:59:49.927Z"),
            "subject": "Message sent from Amazon SES",
            "timestamp": ts("2017-08-09T22:00:19.652Z"),
        },
        OpenDetail(
            timestamp=ts("2017-08-09T22:00:19.652Z"),
            ip_address="192.0.2.1",
            user_agent=(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 10_3_3 like Mac OS X) AppleWebKit/603.3.8 "
                "(KHTML, like Gecko) Mobile/14G60"
            ),
        ),
    ),
    "event-publishing/reject.json": (
        {
            "event_type": "reject",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2016-10-14T17:38:15.211Z"),
            "destination": ["sender@example.com"],
            "tags": {**DOC_TAGS, **CUSTOM_TAGS},
            "timestamp": ts("2016-10-14T17:38:15.211Z"),  # no own timestamp → the mail's
        },
        RejectDetail(reason="Bad content"),
    ),
    "event-publishing/rendering-failure.json": (
        {
            "event_type": "rendering_failure",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2018-01-22T18:43:06.197Z"),
            "subject": None,
            "timestamp": ts("2018-01-22T18:43:06.197Z"),
        },
        RenderingFailureDetail(
            template_name="MyTemplate",
            error_message="Attribute 'attributeName' is not present in the rendering data.",
        ),
    ),
    "event-publishing/send.json": (
        {
            "event_type": "send",
            "format": "event_publishing",
            "ses_message_id": EXAMPLE_ID,
            "mail_timestamp": ts("2016-10-14T05:02:16.645Z"),
            "source": "sender@example.com",
            "source_arn": "arn:aws:ses:us-east-1:123456789012:identity/sender@example.com",
            "sending_account_id": "123456789012",
            "destination": ["recipient@example.com"],
            "subject": "Message sent from Amazon SES",
            "tags": {**DOC_TAGS, **CUSTOM_TAGS},
            "timestamp": ts("2016-10-14T05:02:16.645Z"),
        },
        SendDetail(),
    ),
    "event-publishing/subscription.json": (
        {
            "event_type": "subscription",
            "ses_message_id": "EXAMPLEe4bccb684-777bc8de-afa7-4970-92b0-f515137b1497-000000",
            "mail_timestamp": ts("2022-01-12T01:00:14.340Z"),
            "timestamp": ts("2022-01-12T01:00:17.910Z"),
        },
        SubscriptionDetail(
            timestamp=ts("2022-01-12T01:00:17.910Z"),
            contact_list="ContactListName",
            source="UnsubscribeHeader",
            new_topic_preferences=TopicPreferences(
                unsubscribe_all=True,
                topic_subscription_status=[
                    TopicSubscriptionStatus(topic_name="ExampleTopicName", subscription_status="OptOut")
                ],
            ),
            old_topic_preferences=TopicPreferences(
                unsubscribe_all=False,
                topic_subscription_status=[
                    TopicSubscriptionStatus(topic_name="ExampleTopicName", subscription_status="OptOut")
                ],
            ),
        ),
    ),
    "notification/bounce-permanent-captured-2022.json": (
        {
            "event_type": "bounce",
            "format": "notification",
            "ses_message_id": "0100017fe7043e8e-fc9c357d-a9a4-49bc-a4b4-fa984009d568-000000",
            "mail_timestamp": ts("2022-04-01T21:24:49.422Z"),
            "source": "jesus.islasf@alumno.buap.mx",
            "destination": ["bounce@simulator.amazonses.com"],
            "subject": "Subject Test",
            "tags": {},
            "timestamp": ts("2022-04-01T21:24:49.000Z"),
        },
        BounceDetail(
            bounce_type="Permanent",
            bounce_subtype="General",
            recipients=[
                BouncedRecipient(
                    email="bounce@simulator.amazonses.com",
                    action="failed",
                    status="5.1.1",
                    diagnostic_code="smtp; 550 5.1.1 user unknown",
                )
            ],
            timestamp=ts("2022-04-01T21:24:49.000Z"),
            feedback_id="0100017fe7044080-b95aeb18-3fb8-408a-be9b-15fdbac3945a-000000",
            reporting_mta="dns; a48-30.smtp-out.amazonses.com",
            remote_mta_ip="3.231.136.178",
        ),
    ),
    "notification/bounce-permanent-with-dsn.json": (
        {
            "event_type": "bounce",
            "format": "notification",
            "ses_message_id": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "destination": NT_DESTINATION,
            "subject": "Hello",
            "tags": {},
        },
        BounceDetail(
            bounce_type="Permanent",
            bounce_subtype="General",
            recipients=[
                BouncedRecipient(
                    email="jane@example.com",
                    action="failed",
                    status="5.1.1",
                    diagnostic_code="smtp; 550 5.1.1 <jane@example.com>... User",
                )
            ],
            timestamp=ts("2016-01-27T14:59:38.237Z"),
            feedback_id="00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
            reporting_mta="dns; email.example.com",
            remote_mta_ip="127.0.2.0",
        ),
    ),
    "notification/bounce-permanent-without-dsn.json": (
        {
            "event_type": "bounce",
            "ses_message_id": "00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000",
            "destination": NT_DESTINATION,
            "tags": {},
        },
        BounceDetail(
            bounce_type="Permanent",
            bounce_subtype="General",
            recipients=[
                BouncedRecipient(email="jane@example.com"),
                BouncedRecipient(email="richard@example.com"),
            ],
            timestamp=ts("2016-01-27T14:59:38.237Z"),
            feedback_id="00000137860315fd-869464a4-8680-4114-98d3-716fe35851f9-000000",
            remote_mta_ip="127.0.2.0",
        ),
    ),
    "notification/bounce-transient.json": (
        {
            "event_type": "bounce",
            "ses_message_id": "01010176b6ce1fe6-7ce4d2f3-e075-4386-8574-f91a811fdd89-000000",
            "mail_timestamp": ts("2020-12-31T03:18:50.598Z"),
            "source": "support@anytime.tw",
            "subject": "Anytime Verification Mail",
            "tags": {},
            "timestamp": ts("2020-12-31T17:37:41.000Z"),
        },
        BounceDetail(
            bounce_type="Transient",
            bounce_subtype="General",
            recipients=[
                BouncedRecipient(
                    email="frankie.lee.job@gmailabc.com",
                    action="failed",
                    status="4.4.7",
                    diagnostic_code=(
                        "smtp; 554 4.4.7 Message expired: unable to deliver in 840 minutes."
                        "<421 4.4.2 Connection closed unexpectedly>"
                    ),
                )
            ],
            timestamp=ts("2020-12-31T17:37:41.000Z"),
            feedback_id="01010176b9e06b0b-6a019094-6673-43cb-a5b3-9d6f649ba00d-000000",
            reporting_mta="dsn; a27-50.smtp-out.us-west-2.amazonses.com",
            remote_mta_ip="34.102.136.180",
        ),
    ),
    "notification/complaint-captured-2017.json": (
        {
            "event_type": "complaint",
            "format": "notification",
            "ses_message_id": "0101015d66799783-25cb1bc6-44c7-408b-85b0-5303265489f6-000000",
            "mail_timestamp": ts("2017-07-21T18:47:10.000Z"),
            "source": "actioncenter@eff.org",
            "destination": ["complaint@simulator.amazonses.com"],
            "subject": None,  # no commonHeaders in this one
            "tags": {},
        },
        ComplaintDetail(
            recipients=["complaint@simulator.amazonses.com"],
            timestamp=ts("2017-07-21T18:47:12.000Z"),
            feedback_type="abuse",
            feedback_id="0101015d6679a0d7-02992932-6e45-11e7-8b8d-230f97f3b45c-000000",
            user_agent="Amazon SES Mailbox Simulator",
        ),
    ),
    "notification/complaint-with-feedback-report.json": (
        {
            "event_type": "complaint",
            "ses_message_id": "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
            "destination": NT_DESTINATION,
            "tags": {},
        },
        ComplaintDetail(
            recipients=["richard@example.com"],
            timestamp=ts("2016-01-27T14:59:38.237Z"),
            feedback_type="abuse",
            feedback_id="000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
            user_agent="AnyCompany Feedback Loop (V0.01)",
            arrival_date="2016-01-27T14:59:38.237Z",
        ),
    ),
    "notification/complaint-without-feedback-report.json": (
        {
            "event_type": "complaint",
            "ses_message_id": "0000013786031775-163e3910-53eb-4c8e-a04a-f29debf88a84-000000",
            "tags": {},
        },
        ComplaintDetail(
            recipients=["richard@example.com"],
            timestamp=ts("2016-01-27T14:59:38.237Z"),
            feedback_id="0000013786031775-fea503bc-7497-49e1-881b-a0379bb037d3-000000",
        ),
    ),
    "notification/delivery.json": (
        {
            "event_type": "delivery",
            "format": "notification",
            "ses_message_id": "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
            "source": "john@example.com",
            "source_arn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
            "destination": ["jane@example.com"],
            "subject": "Hello",
            "tags": {},
        },
        DeliveryDetail(
            timestamp=ts("2016-01-27T14:59:38.237Z"),
            recipients=["jane@example.com"],
            processing_time_millis=546,
            smtp_response="250 ok:  Message 64111812 accepted",
            reporting_mta="a8-70.smtp-out.amazonses.com",
            remote_mta_ip="127.0.2.0",
        ),
    ),
}

# SNS envelopes whose Message is an SES record → (fixture file its Message equals, trailing newline?)
ENVELOPES = {
    "signed/2017-ses-notification-complaint-v1.json": "notification/complaint-captured-2017.json",
    "signed/2022-ses-event-complaint-v1.json": "event-publishing/complaint-captured-2022.json",
    "signed/2022-ses-notification-bounce-v1.json": "notification/bounce-permanent-captured-2022.json",
    "sns-envelope/captured/ses-notification-bounce-transient.json": "notification/bounce-transient.json",
}


def _check(event: SesEvent | None, expected: tuple[dict[str, Any], Any]) -> None:
    fields, detail = expected
    assert isinstance(event, SesEvent)
    for key, value in fields.items():
        assert getattr(event, key) == value, key
    assert event.detail == detail
    assert event.event_type == type(detail).__struct_config__.tag
    assert event.timestamp.tzinfo is not None and event.mail_timestamp.tzinfo is not None


def test_every_payload_file_has_expectations() -> None:
    on_disk = {
        f"{p.parent.name}/{p.name}"
        for folder in ("event-publishing", "notification")
        for p in (FIXTURES / folder).glob("*.json")
    }
    assert on_disk == set(EXPECTED)
    kinds = {type(detail).__name__ for _, detail in EXPECTED.values()}
    assert len(kinds) == 10  # every SES event type is covered


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_fixture(name: str) -> None:
    text = (FIXTURES / name).read_text(encoding="utf-8")
    _check(parse_ses_message(text), EXPECTED[name])
    # SNS delivers the record compact, event publishing with a trailing newline; bytes work too.
    compact = json.dumps(json.loads(text), separators=(",", ":"))
    _check(parse_ses_message(compact + "\n"), EXPECTED[name])
    _check(parse_ses_message(compact.encode()), EXPECTED[name])


@pytest.mark.parametrize("envelope", sorted(ENVELOPES))
def test_parse_message_of_sns_envelopes(envelope: str) -> None:
    body = json.loads((FIXTURES / envelope).read_text(encoding="utf-8"))
    message = body["Message"]
    event = parse_ses_message(message)
    _check(event, EXPECTED[ENVELOPES[envelope]])
    assert isinstance(event, SesEvent)
    # Event publishing: Subject envelope + trailing newline; notifications: neither.
    if event.format == "event_publishing":
        assert body.get("Subject") == "Amazon SES Email Event Notification"
        assert message.endswith("\n")
    else:
        assert "Subject" not in body
        assert not message.endswith("\n")


def test_topic_validation_message_is_not_an_error() -> None:
    assert TOPIC_VALIDATION_TEXT == "Successfully validated SNS topic for Amazon SES event publishing."
    assert parse_ses_message(TOPIC_VALIDATION_TEXT) is None
    assert parse_ses_message(TOPIC_VALIDATION_TEXT + "\n") is None
    assert parse_ses_message(TOPIC_VALIDATION_TEXT.encode()) is None


def test_rendering_failure_without_space_and_event_round_trip() -> None:
    raw = json.loads((FIXTURES / "event-publishing/rendering-failure.json").read_text())
    raw["eventType"] = "RenderingFailure"
    event = parse_ses_message(json.dumps(raw))
    assert isinstance(event, SesEvent) and event.event_type == "rendering_failure"
    # SesEvent (with its tagged detail) survives a msgspec round trip, e.g. for storage.
    assert msgspec.json.decode(msgspec.json.encode(event), type=SesEvent) == event


def _mutated(name: str, mutate: Any) -> str:
    raw = json.loads((FIXTURES / name).read_text())
    mutate(raw)
    return json.dumps(raw)


MALFORMED = {
    "empty": "",
    "not json": "hello",
    "json list": "[]",
    "json string": '"Bounce"',
    "other plain text": "Successfully validated SNS topic",
    "no type": _mutated("event-publishing/send.json", lambda r: r.pop("eventType")),
    "both types": _mutated("event-publishing/send.json", lambda r: r.update(notificationType="Bounce")),
    "unknown eventType": _mutated("event-publishing/send.json", lambda r: r.update(eventType="Explode")),
    "notification type only in events": _mutated(
        "notification/delivery.json", lambda r: r.update(notificationType="Open")
    ),
    "inbound Received": _mutated("notification/delivery.json", lambda r: r.update(notificationType="Received")),
    "no mail": _mutated("event-publishing/send.json", lambda r: r.pop("mail")),
    "no messageId": _mutated("event-publishing/send.json", lambda r: r["mail"].pop("messageId")),
    "bad mail timestamp": _mutated("event-publishing/send.json", lambda r: r["mail"].update(timestamp="yesterday")),
    "naive timestamp": _mutated(
        "event-publishing/send.json", lambda r: r["mail"].update(timestamp="2016-10-14T05:02:16")
    ),
    "bounce without bounce": _mutated("event-publishing/bounce-permanent.json", lambda r: r.pop("bounce")),
    "unknown bounceType": _mutated(
        "event-publishing/bounce-permanent.json", lambda r: r["bounce"].update(bounceType="Soft")
    ),
    "complaint without recipients": _mutated(
        "notification/complaint-captured-2017.json", lambda r: r["complaint"].pop("complainedRecipients")
    ),
    "delivery without delivery": _mutated("notification/delivery.json", lambda r: r.pop("delivery")),
    "click without link": _mutated("event-publishing/click.json", lambda r: r["click"].pop("link")),
    "open without open": _mutated("event-publishing/open.json", lambda r: r.pop("open")),
    "reject without reason": _mutated("event-publishing/reject.json", lambda r: r.update(reject={})),
    "delay without delay": _mutated("event-publishing/delivery-delay.json", lambda r: r.pop("deliveryDelay")),
    "failure without failure": _mutated("event-publishing/rendering-failure.json", lambda r: r.pop("failure")),
    "subscription without subscription": _mutated(
        "event-publishing/subscription.json", lambda r: r.pop("subscription")
    ),
    "tags not lists": _mutated("event-publishing/send.json", lambda r: r["mail"].update(tags={"a": "b"})),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_raise(name: str) -> None:
    with pytest.raises(SesParseError):
        parse_ses_message(MALFORMED[name])


def test_event_timestamps_are_utc() -> None:
    event = parse_ses_message((FIXTURES / "event-publishing/send.json").read_text())
    assert isinstance(event, SesEvent)
    assert event.mail_timestamp == datetime(2016, 10, 14, 5, 2, 16, 645000, tzinfo=UTC)


# --------------------------------------------------------------------------- hostile records (issue 14)


def test_nul_escape_in_a_record_becomes_replacement_character() -> None:
    """Postgres text cannot hold NUL; a NUL an MTA put in a bounce must not lose the event."""
    record = json.loads((FIXTURES / "event-publishing" / "bounce-permanent.json").read_text())
    record["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = "smtp; 550 no\u0000such user \\u0000"
    event = parse_ses_message(json.dumps(record))
    assert event is not None and isinstance(event.detail, BounceDetail)
    # The escaped NUL became U+FFFD; the literal text backslash-u0000 stayed as it was.
    assert event.detail.recipients[0].diagnostic_code == "smtp; 550 no\ufffdsuch user \\u0000"


def test_record_nested_beyond_the_decoder_is_a_parse_error() -> None:
    with pytest.raises(SesParseError):
        parse_ses_message('{"eventType": "Send", "mail": ' + "[" * 10_000 + "]" * 10_000 + "}")
