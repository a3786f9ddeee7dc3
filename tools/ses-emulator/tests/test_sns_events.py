"""SES event publishing through signed SNS messages to a real HTTP subscriber."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from ses_emulator_testkit import (
    FIXTURES,
    TOPIC,
    SnsReceiver,
    StartEmulator,
    raw_mime,
    ses_client,
    setup_events,
    sns_string_to_sign,
    verify_sns_signature,
    wait_for,
)

SIM = "simulator.amazonses.com"
EXPECTED = {
    f"success@{SIM}": ["Send", "Delivery"],
    f"bounce@{SIM}": ["Send", "Bounce"],
    f"complaint@{SIM}": ["Send", "Delivery", "Complaint"],
    f"ooto@{SIM}": ["Send", "Delivery"],
    f"suppressionlist@{SIM}": ["Send", "Bounce"],
    "anyone@example.net": ["Send", "Delivery"],
}


def fixture_json(rel: str) -> Any:
    path = FIXTURES / rel
    assert path.exists(), f"fixture {path} missing (tests/fixtures/ses-sns is a copy of shared/fixtures/ses-sns)"
    return json.loads(path.read_text())


def test_test_verifier_accepts_real_aws_signatures() -> None:
    """The receiver's string-to-sign + verification agrees with messages really signed by AWS."""
    manifest = fixture_json("signed/manifest.json")
    checked = 0
    for entry in manifest:
        msg = json.loads((FIXTURES / "signed" / entry["file"]).read_text())
        pem = (FIXTURES / "signed" / entry["certificate"]).read_bytes()
        expected = (FIXTURES / "signed" / entry["file"].replace(".json", ".string-to-sign.txt")).read_bytes()
        assert sns_string_to_sign(msg) == expected, entry["file"]
        verify_sns_signature(msg, pem, check_validity=False)
        checked += 1
    assert checked == 14


def test_every_simulator_outcome(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    ids: dict[str, str] = {}
    for i, rcpt in enumerate(EXPECTED):
        resp = ses.send_email(
            Destination={"ToAddresses": [rcpt]},
            Content={"Raw": {"Data": raw_mime(to=rcpt, subject=f"Test {i}")}},
            ConfigurationSetName="mailroom",
            EmailTags=[
                {"Name": "mailroom_email_id", "Value": f"em_{i}"},
                {"Name": "mailroom_tenant_id", "Value": "ten_1"},
            ],
        )
        ids[rcpt] = resp["MessageId"]

    def all_arrived() -> bool:
        return all(len(receiver.event_types(ids[r])) >= len(e) for r, e in EXPECTED.items())

    wait_for(all_arrived, what="events for every recipient")
    # nothing more arrives than expected (all jobs done)
    wait_for(lambda: httpx.get(f"{srv.url}/_emulator/notifications").json()["pending_jobs"] == 0)
    for i, (rcpt, expected) in enumerate(EXPECTED.items()):
        assert receiver.event_types(ids[rcpt]) == expected, rcpt
        for rec in receiver.events(ids[rcpt]):
            mail = rec["mail"]
            assert mail["messageId"] == ids[rcpt]
            assert mail["destination"] == [rcpt]
            assert mail["source"] == "Mailroom <noreply@example.com>"
            assert mail["sourceArn"] == "arn:aws:ses:us-east-1:000000000000:identity/example.com"
            assert mail["sendingAccountId"] == "000000000000"
            assert mail["headersTruncated"] is False
            assert {"name": "Subject", "value": f"Test {i}"} in mail["headers"]
            assert mail["commonHeaders"]["from"] == ["Mailroom <noreply@example.com>"]
            assert mail["commonHeaders"]["to"] == [rcpt]
            assert mail["commonHeaders"]["subject"] == f"Test {i}"
            tags = mail["tags"]
            assert tags["mailroom_email_id"] == [f"em_{i}"]
            assert tags["mailroom_tenant_id"] == ["ten_1"]
            assert tags["ses:configuration-set"] == ["mailroom"]
            assert tags["ses:from-domain"] == ["example.com"]
            assert tags["ses:operation"] == ["SendEmail"]
            assert tags["ses:source-ip"] == ["127.0.0.1"]
            assert tags["ses:caller-identity"]

    bounce = receiver.events(ids[f"bounce@{SIM}"])[1]["bounce"]
    assert bounce["bounceType"] == "Permanent" and bounce["bounceSubType"] == "General"
    assert bounce["bouncedRecipients"] == [
        {
            "emailAddress": f"bounce@{SIM}",
            "action": "failed",
            "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
        }
    ]
    suppressed = receiver.events(ids[f"suppressionlist@{SIM}"])[1]["bounce"]
    assert suppressed["bounceType"] == "Permanent"
    assert suppressed["bounceSubType"] == "OnAccountSuppressionList"
    assert suppressed["bouncedRecipients"][0]["emailAddress"] == f"suppressionlist@{SIM}"
    complaint = receiver.events(ids[f"complaint@{SIM}"])[2]["complaint"]
    assert complaint["complaintFeedbackType"] == "abuse"
    assert complaint["complainedRecipients"] == [{"emailAddress": f"complaint@{SIM}"}]
    delivery = receiver.events(ids[f"success@{SIM}"])[1]["delivery"]
    assert delivery["recipients"] == [f"success@{SIM}"]
    assert delivery["smtpResponse"].startswith("250 ")

    # the SNS envelopes of events
    event_msgs = [m for m in receiver.of_type("Notification") if m.record is not None]
    assert len(event_msgs) == sum(len(v) for v in EXPECTED.values())
    for m in event_msgs:
        assert m.body["Subject"] == "Amazon SES Email Event Notification"
        assert m.body["Message"].endswith("}\n")
        assert m.body["TopicArn"] == TOPIC
        assert m.body["SigningCertURL"].startswith(srv.url + "/_emulator/SimpleNotificationService-")
        assert m.body["SigningCertURL"].endswith(".pem")
        assert m.body["UnsubscribeURL"].startswith(srv.url + "/")
        assert m.path == "/ses/sns"
    assert len({m.body["MessageId"] for m in event_msgs}) == len(event_msgs)


def test_shapes_match_the_real_fixtures(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    """Key order of envelope, records and mail objects follows the AWS samples."""
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    ids = [
        ses.send_email(Content={"Raw": {"Data": raw_mime(to=f"{who}@{SIM}")}}, ConfigurationSetName="mailroom")[
            "MessageId"
        ]
        for who in ("bounce", "complaint")
    ]
    wait_for(lambda: len(receiver.events(ids[0])) == 2 and len(receiver.events(ids[1])) == 3)
    ours = {r["eventType"]: r for i in ids for r in receiver.events(i)}

    envelope = fixture_json("signed/2022-ses-event-complaint-v1.json")
    complaint_msg = next(
        m for m in receiver.of_type("Notification") if (m.record or {}).get("eventType") == "Complaint"
    )
    assert list(complaint_msg.body) == list(envelope)
    real_headers = fixture_json("sns-envelope/notification.headers.json")
    for name in real_headers:
        if name.lower().startswith("x-amz-sns-") or name.lower() == "content-type":
            assert name.lower() in complaint_msg.headers, name
    assert complaint_msg.headers["user-agent"] == real_headers.get(
        "User-Agent", "Amazon Simple Notification Service Agent"
    )

    real = {
        "Send": fixture_json("event-publishing/send.json"),
        "Delivery": fixture_json("event-publishing/delivery.json"),
        "Bounce": fixture_json("event-publishing/bounce-permanent.json"),
        "Complaint": fixture_json("event-publishing/complaint-captured-2022.json"),
    }
    for event_type, sample in real.items():
        rec = ours[event_type]
        assert list(rec) == list(sample), event_type
        assert list(rec["mail"]) == list(sample["mail"]), event_type
        inner = event_type.lower()
        assert set(sample[inner]) <= set(rec[inner]) | {"remoteMtaIp"}, event_type
    captured = real["Complaint"]
    assert list(ours["Complaint"]["complaint"]) == list(captured["complaint"])
    assert list(ours["Complaint"]["mail"]["tags"])[:5] == list(captured["mail"]["tags"])


def test_matching_event_types_filter(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver, types=["BOUNCE", "COMPLAINT"])
    multi = ses.send_email(
        Destination={"ToAddresses": [f"success@{SIM}", f"bounce@{SIM}", f"complaint@{SIM}"]},
        Content={"Raw": {"Data": raw_mime()}},
        ConfigurationSetName="mailroom",
    )["MessageId"]
    wait_for(lambda: len(receiver.events(multi)) >= 2)
    wait_for(lambda: httpx.get(f"{srv.url}/_emulator/notifications").json()["pending_jobs"] == 0)
    assert receiver.event_types(multi) == ["Bounce", "Complaint"]


def test_multiple_recipients_in_order(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    ses = ses_client(start_emulator().url)
    setup_events(ses, receiver)
    mid = ses.send_email(
        Content={"Raw": {"Data": raw_mime(to=f"success@{SIM}, bounce@{SIM}", extra=f"Cc: complaint@{SIM}\r\n")}},
        ConfigurationSetName="mailroom",
    )["MessageId"]
    wait_for(lambda: len(receiver.events(mid)) == 5)
    assert receiver.event_types(mid) == ["Send", "Delivery", "Bounce", "Delivery", "Complaint"]
    send = receiver.events(mid)[0]
    assert send["mail"]["destination"] == [f"success@{SIM}", f"bounce@{SIM}", f"complaint@{SIM}"]
    assert send["send"] == {}


def test_no_events_without_enabled_destination(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    ses.update_configuration_set_event_destination(
        ConfigurationSetName="mailroom",
        EventDestinationName="sns",
        EventDestination={
            "Enabled": False,
            "MatchingEventTypes": ["SEND"],
            "SnsDestination": {"TopicArn": TOPIC},
        },
    )
    before = len(httpx.get(f"{srv.url}/_emulator/notifications").json()["notifications"])
    ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")
    ses.send_email(Content={"Raw": {"Data": raw_mime()}})  # no configuration set at all
    assert len(httpx.get(f"{srv.url}/_emulator/sent").json()["messages"]) == 2
    assert len(httpx.get(f"{srv.url}/_emulator/notifications").json()["notifications"]) == before


def test_subscription_confirmation_flow(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    receiver.auto_confirm = False
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver, wait_confirmed=False)

    conf = wait_for(lambda: receiver.of_type("SubscriptionConfirmation"), what="SubscriptionConfirmation")[0].body
    assert list(conf) == [
        "Type",
        "MessageId",
        "Token",
        "TopicArn",
        "Message",
        "SubscribeURL",
        "Timestamp",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
    ]
    assert conf["TopicArn"] == TOPIC
    assert conf["Message"] == (
        f"You have chosen to subscribe to the topic {TOPIC}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message."
    )
    assert conf["SubscribeURL"].startswith(f"{srv.url}/_emulator/sns/confirm?")
    assert f"TopicArn={TOPIC}" in conf["SubscribeURL"] and f"Token={conf['Token']}" in conf["SubscribeURL"]
    subs = httpx.get(f"{srv.url}/_emulator/subscriptions").json()["subscriptions"]
    assert [(s["topic_arn"], s["endpoint"], s["confirmed"]) for s in subs] == [(TOPIC, receiver.url, False)]

    # not confirmed: events are not delivered (only logged as skipped)
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    notes = httpx.get(f"{srv.url}/_emulator/notifications").json()["notifications"]
    skipped = [n for n in notes if n["ses_message_id"] == mid]
    assert [n["event_type"] for n in skipped] == ["Send", "Delivery"]
    assert all(n["state"] == "skipped" and n["attempts"] == 0 for n in skipped)

    # a wrong token is refused
    bad = httpx.get(f"{srv.url}/_emulator/sns/confirm", params={"TopicArn": TOPIC, "Token": "nope"})
    assert bad.status_code == 400 and "<ErrorResponse" in bad.text

    resp = httpx.get(conf["SubscribeURL"])
    assert resp.status_code == 200
    assert "<ConfirmSubscriptionResponse" in resp.text
    assert f"<SubscriptionArn>{subs[0]['subscription_arn']}</SubscriptionArn>" in resp.text
    assert subs[0]["subscription_arn"].startswith(TOPIC + ":")
    wait_for(receiver.validations, what="validation message")
    validation = receiver.validations()[0]
    assert "Subject" not in validation.body
    assert validation.headers["x-amz-sns-subscription-arn"] == subs[0]["subscription_arn"]
    assert httpx.get(f"{srv.url}/_emulator/subscriptions").json()["subscriptions"][0]["confirmed"] is True

    mid2 = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    wait_for(lambda: receiver.event_types(mid2) == ["Send", "Delivery"])
    assert receiver.events(mid) == []


def test_confirmation_not_required(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    receiver.auto_confirm = False
    ses = ses_client(start_emulator(require_confirmation=False).url)
    setup_events(ses, receiver, wait_confirmed=False)
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    wait_for(lambda: receiver.event_types(mid) == ["Send", "Delivery"])


def test_retries_keep_order(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    receiver.fail_notifications = 3
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    wait_for(lambda: receiver.event_types(mid) == ["Send", "Delivery"], what="events after retries")
    notes = httpx.get(f"{srv.url}/_emulator/notifications", params={"ses_message_id": mid}).json()["notifications"]
    assert [(n["event_type"], n["state"], n["attempts"], n["last_status"]) for n in notes] == [
        ("Send", "delivered", 4, 200),
        ("Delivery", "delivered", 1, 200),
    ]
    assert notes[0]["url"] == receiver.url and notes[0]["topic_arn"] == TOPIC
    assert notes[0]["type"] == "Notification"


def test_gives_up_after_max_attempts(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator(sns_max_attempts=2)
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    receiver.fail_notifications = 2
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    wait_for(lambda: receiver.event_types(mid) == ["Delivery"], what="Delivery after the Send was dropped")
    notes = [
        n for n in httpx.get(f"{srv.url}/_emulator/notifications").json()["notifications"] if n["ses_message_id"] == mid
    ]
    assert [(n["event_type"], n["state"], n["attempts"]) for n in notes] == [
        ("Send", "failed", 2),
        ("Delivery", "delivered", 1),
    ]


def test_unreachable_subscriber_does_not_delay_sending(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    from mailroom_ses_emulator import SnsSubscriptionConfig

    dead = "http://127.0.0.1:9/ses/sns"  # discard port: connection refused
    srv = start_emulator(
        sns_subscriptions=(SnsSubscriptionConfig(TOPIC, dead),),
        require_confirmation=False,
        sns_max_attempts=3,
    )
    ses = ses_client(srv.url)
    setup_events(ses, receiver, wait_confirmed=False)
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]

    def failed() -> list[dict[str, Any]]:
        notes = httpx.get(f"{srv.url}/_emulator/notifications").json()["notifications"]
        return [n for n in notes if n["ses_message_id"] == mid and n["state"] == "failed"]

    wait_for(lambda: len(failed()) == 2, what="failed deliveries")
    notes = failed()
    assert all(n["attempts"] == 3 and n["last_status"] is None and n["last_error"] for n in notes)


def test_signing_certificate_endpoint(start_emulator: StartEmulator, receiver: SnsReceiver, tmp_path: Path) -> None:
    from cryptography import x509

    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    cert_url = receiver.validations()[0].body["SigningCertURL"]
    resp = httpx.get(cert_url)
    assert resp.status_code == 200
    cert = x509.load_pem_x509_certificate(resp.content)
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    assert "CN=sns.amazonaws.com" in cert.subject.rfc4514_string()
    assert httpx.get(f"{srv.url}/_emulator/SimpleNotificationService-0000.pem").status_code == 404


def test_unsubscribe_and_resend_confirmation(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver)
    unsubscribe_url = receiver.validations()[0].body["UnsubscribeURL"]
    resp = httpx.get(unsubscribe_url)
    assert resp.status_code == 200 and "<UnsubscribeResponse" in resp.text
    assert httpx.get(f"{srv.url}/_emulator/subscriptions").json()["subscriptions"][0]["confirmed"] is False

    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    notes = httpx.get(f"{srv.url}/_emulator/notifications", params={"ses_message_id": mid}).json()
    assert {n["state"] for n in notes["notifications"]} == {"skipped"}

    assert httpx.post(f"{srv.url}/_emulator/subscriptions/resend-confirmations").json() == {"sent": 1}
    wait_for(lambda: len(receiver.of_type("SubscriptionConfirmation")) == 2, what="second confirmation")
    wait_for(lambda: httpx.get(f"{srv.url}/_emulator/subscriptions").json()["subscriptions"][0]["confirmed"])
    mid2 = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    wait_for(lambda: receiver.event_types(mid2) == ["Send", "Delivery"])


def test_open_and_click_fired_for_a_sent_message(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    """`POST /_emulator/sent/{id}/open|click` publishes a signed Open/Click shaped like the AWS samples."""
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver, types=["SEND", "DELIVERY", "OPEN", "CLICK"])
    mid = ses.send_email(
        Content={"Raw": {"Data": raw_mime(to=f"success@{SIM}")}},
        ConfigurationSetName="mailroom",
        EmailTags=[{"Name": "mailroom_email_id", "Value": "msg_1"}],
    )["MessageId"]
    wait_for(lambda: len(receiver.events(mid)) == 2)
    opened = httpx.post(
        f"{srv.url}/_emulator/sent/{mid}/open", json={"ip_address": "198.51.100.7", "user_agent": "UA/1"}
    )
    assert opened.status_code == 200 and len(opened.json()["sns_message_ids"]) == 1
    clicked = httpx.post(
        f"{srv.url}/_emulator/sent/{mid}/click", json={"link": "https://acme.test/a", "link_tags": {"k": ["v"]}}
    )
    assert clicked.status_code == 200 and clicked.json()["event_type"] == "Click"
    wait_for(lambda: len(receiver.events(mid)) == 4)
    assert receiver.event_types(mid) == ["Send", "Delivery", "Open", "Click"]
    open_rec, click_rec = receiver.events(mid)[2:]
    assert open_rec["open"]["ipAddress"] == "198.51.100.7" and open_rec["open"]["userAgent"] == "UA/1"
    assert click_rec["click"]["link"] == "https://acme.test/a" and click_rec["click"]["linkTags"] == {"k": ["v"]}
    assert open_rec["mail"]["tags"]["mailroom_email_id"] == ["msg_1"]
    for rec, sample in ((open_rec, "event-publishing/open.json"), (click_rec, "event-publishing/click.json")):
        real = fixture_json(sample)
        inner = rec["eventType"].lower()
        assert set(rec) == set(real) and set(rec[inner]) == set(real[inner])
        assert list(rec["mail"]) == list(fixture_json("event-publishing/send.json")["mail"])
    signed = [m for m in receiver.of_type("Notification") if (m.record or {}).get("eventType") in ("Open", "Click")]
    assert len(signed) == 2
    for m in signed:
        verify_sns_signature(m.body, httpx.get(m.body["SigningCertURL"]).content)

    missing = httpx.post(f"{srv.url}/_emulator/sent/nope/open")
    assert missing.status_code == 404
    bad = httpx.post(f"{srv.url}/_emulator/sent/{mid}/click", json={"link": 42})
    assert bad.status_code == 400


def test_open_is_not_published_where_the_configuration_set_does_not_track_it(
    start_emulator: StartEmulator, receiver: SnsReceiver
) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver, types=["SEND", "DELIVERY"])
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="mailroom")["MessageId"]
    r = httpx.post(f"{srv.url}/_emulator/sent/{mid}/open")
    assert r.status_code == 200 and r.json()["sns_message_ids"] == []


def test_a_notification_is_redelivered_byte_for_byte(start_emulator: StartEmulator, receiver: SnsReceiver) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver, types=["DELIVERY"])
    mid = ses.send_email(Content={"Raw": {"Data": raw_mime(to=f"success@{SIM}")}}, ConfigurationSetName="mailroom")[
        "MessageId"
    ]
    wait_for(lambda: len(receiver.events(mid)) == 1)
    [note] = httpx.get(f"{srv.url}/_emulator/notifications", params={"ses_message_id": mid}).json()["notifications"]
    for _ in range(2):
        r = httpx.post(f"{srv.url}/_emulator/notifications/{note['sns_message_id']}/redeliver")
        assert r.status_code == 200 and r.json()["queued"] == 1
    wait_for(lambda: len(receiver.events(mid)) == 3)
    bodies = [
        m.body for m in receiver.of_type("Notification") if (m.record or {}).get("mail", {}).get("messageId") == mid
    ]
    assert len(bodies) == 3 and bodies[0] == bodies[1] == bodies[2]  # same MessageId, same signature
    assert httpx.post(f"{srv.url}/_emulator/notifications/nope/redeliver").status_code == 404


def test_unsubscribe_fires_a_subscription_event_for_one_recipient(
    start_emulator: StartEmulator, receiver: SnsReceiver
) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    setup_events(ses, receiver, types=["SEND", "SUBSCRIPTION"])
    mid = ses.send_email(
        Destination={"ToAddresses": [f"success@{SIM}", "other@example.net"]},
        Content={"Raw": {"Data": raw_mime()}},
        ConfigurationSetName="mailroom",
    )["MessageId"]
    wait_for(lambda: len(receiver.events(mid)) == 1)
    r = httpx.post(f"{srv.url}/_emulator/sent/{mid}/unsubscribe", json={"recipient": "other@example.net"})
    assert r.status_code == 200 and r.json()["event_type"] == "Subscription" and r.json()["sns_message_ids"]
    wait_for(lambda: len(receiver.events(mid)) == 2)
    rec = receiver.events(mid)[1]
    real = fixture_json("event-publishing/subscription.json")
    assert rec["eventType"] == "Subscription" and set(rec) == set(real)
    assert set(rec["subscription"]) == set(real["subscription"])
    assert rec["subscription"]["newTopicPreferences"]["unsubscribeAll"] is True
    assert rec["mail"]["destination"] == ["other@example.net"]
    bad = httpx.post(f"{srv.url}/_emulator/sent/{mid}/unsubscribe", json={"recipient": "stranger@example.net"})
    assert bad.status_code == 400
