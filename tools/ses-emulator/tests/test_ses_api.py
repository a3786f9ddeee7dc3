"""SES v2 API through real boto3 calls: identities, verification modes, configuration sets, sending."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest
from botocore.exceptions import ClientError
from ses_emulator_testkit import TOPIC, StartEmulator, raw_mime, ses_client, wait_for

SES_ID = re.compile(r"^0100[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-000000$")


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_domain_identity_lifecycle(start_emulator: StartEmulator) -> None:
    emulator = start_emulator()
    ses = ses_client(emulator.url)
    created = ses.create_email_identity(
        EmailIdentity="Example.COM", DkimSigningAttributes={"NextSigningKeyLength": "RSA_2048_BIT"}
    )
    assert created["IdentityType"] == "DOMAIN"
    assert created["VerifiedForSendingStatus"] is True
    dkim = created["DkimAttributes"]
    assert dkim["SigningEnabled"] is True
    assert dkim["Status"] == "SUCCESS"
    assert dkim["SigningAttributesOrigin"] == "AWS_SES"
    assert dkim["NextSigningKeyLength"] == "RSA_2048_BIT"
    tokens = dkim["Tokens"]
    assert len(tokens) == 3 and len(set(tokens)) == 3
    assert all(re.fullmatch(r"[a-z2-7]{32}", t) for t in tokens)

    with pytest.raises(ClientError) as exc:
        ses.create_email_identity(EmailIdentity="example.com")
    assert error_code(exc) == "AlreadyExistsException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    got = ses.get_email_identity(EmailIdentity="example.com")
    assert got["IdentityType"] == "DOMAIN"
    assert got["VerificationStatus"] == "SUCCESS"
    assert got["VerifiedForSendingStatus"] is True
    assert got["DkimAttributes"]["Tokens"] == tokens
    assert got["MailFromAttributes"]["BehaviorOnMxFailure"] == "USE_DEFAULT_VALUE"
    assert "MailFromDomain" not in got["MailFromAttributes"]

    ses.put_email_identity_mail_from_attributes(
        EmailIdentity="example.com", MailFromDomain="bounce.example.com", BehaviorOnMxFailure="REJECT_MESSAGE"
    )
    mail_from = ses.get_email_identity(EmailIdentity="example.com")["MailFromAttributes"]
    assert mail_from == {
        "MailFromDomain": "bounce.example.com",
        "MailFromDomainStatus": "SUCCESS",
        "BehaviorOnMxFailure": "REJECT_MESSAGE",
    }
    with pytest.raises(ClientError) as exc:
        ses.put_email_identity_mail_from_attributes(EmailIdentity="example.com", MailFromDomain="bounce.other.org")
    assert error_code(exc) == "BadRequestException"
    with pytest.raises(ClientError) as exc:
        ses.put_email_identity_mail_from_attributes(EmailIdentity="unknown.com", MailFromDomain="m.unknown.com")
    assert error_code(exc) == "NotFoundException"

    listed = ses.list_email_identities()["EmailIdentities"]
    assert [i["IdentityName"] for i in listed] == ["example.com"]

    ses.delete_email_identity(EmailIdentity="example.com")
    with pytest.raises(ClientError) as exc:
        ses.get_email_identity(EmailIdentity="example.com")
    assert error_code(exc) == "NotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as exc:
        ses.delete_email_identity(EmailIdentity="example.com")
    assert error_code(exc) == "NotFoundException"
    # Every GetEmailIdentity call is counted per identity (the two above and the one after the delete).
    reads = httpx.get(f"{emulator.url}/_emulator/identity-reads", timeout=5).json()["reads"]
    assert reads == {"example.com": 3}


def test_email_address_identity(start_emulator: StartEmulator) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    created = ses.create_email_identity(EmailIdentity="ops@other.org")
    assert created["IdentityType"] == "EMAIL_ADDRESS"
    assert created["VerifiedForSendingStatus"] is True
    got = ses.get_email_identity(EmailIdentity="ops@other.org")
    assert got["VerificationStatus"] == "SUCCESS"
    # an address identity allows that address only
    ses.send_email(FromEmailAddress="ops@other.org", Content={"Raw": {"Data": raw_mime(from_="ops@other.org")}})
    with pytest.raises(ClientError) as exc:
        ses.send_email(
            FromEmailAddress="someone@other.org",
            Content={"Raw": {"Data": raw_mime(from_="someone@other.org")}},
        )
    assert error_code(exc) == "MessageRejected"
    identities = httpx.get(f"{srv.url}/_emulator/identities").json()["identities"]
    assert [(i["identity"], i["type"]) for i in identities] == [("ops@other.org", "EMAIL_ADDRESS")]


def test_verify_never_and_forced_status(start_emulator: StartEmulator) -> None:
    srv = start_emulator(verify="never")
    ses = ses_client(srv.url)
    created = ses.create_email_identity(EmailIdentity="example.com")
    assert created["VerifiedForSendingStatus"] is False
    assert created["DkimAttributes"]["Status"] == "PENDING"
    got = ses.get_email_identity(EmailIdentity="example.com")
    assert got["VerificationStatus"] == "PENDING"
    with pytest.raises(ClientError) as exc:
        ses.send_email(Content={"Raw": {"Data": raw_mime()}})
    assert error_code(exc) == "MessageRejected"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "not verified" in exc.value.response["Error"]["Message"]

    resp = httpx.post(f"{srv.url}/_emulator/identities/example.com/verification", json={"status": "SUCCESS"})
    assert resp.status_code == 200 and resp.json()["verification_status"] == "SUCCESS"
    got = ses.get_email_identity(EmailIdentity="example.com")
    assert got["DkimAttributes"]["Status"] == "SUCCESS" and got["VerifiedForSendingStatus"] is True
    assert SES_ID.match(ses.send_email(Content={"Raw": {"Data": raw_mime()}})["MessageId"])

    httpx.post(f"{srv.url}/_emulator/identities/example.com/verification", json={"status": "FAILED"})
    assert ses.get_email_identity(EmailIdentity="example.com")["DkimAttributes"]["Status"] == "FAILED"


def test_verify_failed_mode(start_emulator: StartEmulator) -> None:
    ses = ses_client(start_emulator(verify="failed").url)
    created = ses.create_email_identity(EmailIdentity="example.com")
    assert created["DkimAttributes"]["Status"] == "FAILED"
    assert created["VerifiedForSendingStatus"] is False


def test_verify_after_delay(start_emulator: StartEmulator) -> None:
    ses = ses_client(start_emulator(verify=0.3).url)
    ses.create_email_identity(EmailIdentity="example.com")
    ses.put_email_identity_mail_from_attributes(EmailIdentity="example.com", MailFromDomain="mail.example.com")
    got = ses.get_email_identity(EmailIdentity="example.com")
    assert got["DkimAttributes"]["Status"] == "PENDING"
    assert got["MailFromAttributes"]["MailFromDomainStatus"] == "PENDING"
    wait_for(
        lambda: ses.get_email_identity(EmailIdentity="example.com")["DkimAttributes"]["Status"] == "SUCCESS",
        timeout=5,
        what="DKIM SUCCESS",
    )
    got = ses.get_email_identity(EmailIdentity="example.com")
    assert got["VerifiedForSendingStatus"] is True
    wait_for(
        lambda: (
            ses.get_email_identity(EmailIdentity="example.com")["MailFromAttributes"]["MailFromDomainStatus"]
            == "SUCCESS"
        ),
        timeout=5,
        what="MAIL FROM SUCCESS",
    )


def test_configuration_sets_and_event_destinations(start_emulator: StartEmulator) -> None:
    ses = ses_client(start_emulator().url)
    ses.create_configuration_set(ConfigurationSetName="mailroom", SendingOptions={"SendingEnabled": True})
    with pytest.raises(ClientError) as exc:
        ses.create_configuration_set(ConfigurationSetName="mailroom")
    assert error_code(exc) == "AlreadyExistsException"
    got = ses.get_configuration_set(ConfigurationSetName="mailroom")
    assert got["ConfigurationSetName"] == "mailroom"
    assert got["SendingOptions"] == {"SendingEnabled": True}
    with pytest.raises(ClientError) as exc:
        ses.get_configuration_set(ConfigurationSetName="nope")
    assert error_code(exc) == "NotFoundException"

    definition = {
        "Enabled": True,
        "MatchingEventTypes": ["SEND", "DELIVERY", "BOUNCE", "COMPLAINT"],
        "SnsDestination": {"TopicArn": TOPIC},
    }
    ses.create_configuration_set_event_destination(
        ConfigurationSetName="mailroom", EventDestinationName="sns", EventDestination=definition
    )
    with pytest.raises(ClientError) as exc:
        ses.create_configuration_set_event_destination(
            ConfigurationSetName="mailroom", EventDestinationName="sns", EventDestination=definition
        )
    assert error_code(exc) == "AlreadyExistsException"
    with pytest.raises(ClientError) as exc:
        ses.create_configuration_set_event_destination(
            ConfigurationSetName="nope", EventDestinationName="sns", EventDestination=definition
        )
    assert error_code(exc) == "NotFoundException"
    dests = ses.get_configuration_set_event_destinations(ConfigurationSetName="mailroom")["EventDestinations"]
    assert dests == [{"Name": "sns", **definition}]
    with pytest.raises(ClientError) as exc:
        ses.get_configuration_set_event_destinations(ConfigurationSetName="nope")
    assert error_code(exc) == "NotFoundException"

    ses.update_configuration_set_event_destination(
        ConfigurationSetName="mailroom",
        EventDestinationName="sns",
        EventDestination={**definition, "Enabled": False},
    )
    dests = ses.get_configuration_set_event_destinations(ConfigurationSetName="mailroom")["EventDestinations"]
    assert dests[0]["Enabled"] is False
    assert ses.list_configuration_sets()["ConfigurationSets"] == ["mailroom"]

    ses.delete_configuration_set(ConfigurationSetName="mailroom")
    with pytest.raises(ClientError) as exc:
        ses.get_configuration_set(ConfigurationSetName="mailroom")
    assert error_code(exc) == "NotFoundException"
    with pytest.raises(ClientError) as exc:
        ses.delete_configuration_set(ConfigurationSetName="mailroom")
    assert error_code(exc) == "NotFoundException"


def test_send_email_validation(start_emulator: StartEmulator) -> None:
    ses = ses_client(start_emulator().url)
    ses.create_email_identity(EmailIdentity="example.com")

    # unverified from-domain
    with pytest.raises(ClientError) as exc:
        ses.send_email(Content={"Raw": {"Data": raw_mime(from_="a@unverified.org")}})
    assert error_code(exc) == "MessageRejected"
    with pytest.raises(ClientError) as exc:
        ses.send_email(
            FromEmailAddress="a@unverified.org",
            Destination={"ToAddresses": ["x@example.net"]},
            Content={"Raw": {"Data": raw_mime()}},
        )
    assert error_code(exc) == "MessageRejected"
    # a subdomain of a verified domain may send
    ses.send_email(Content={"Raw": {"Data": raw_mime(from_="news@mail.example.com")}})
    # unknown configuration set
    with pytest.raises(ClientError) as exc:
        ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="nope")
    assert error_code(exc) == "NotFoundException"
    # no recipients at all
    with pytest.raises(ClientError) as exc:
        ses.send_email(Content={"Raw": {"Data": b"From: a@example.com\r\nSubject: x\r\n\r\nbody"}})
    assert error_code(exc) == "BadRequestException"
    # illegal tag
    with pytest.raises(ClientError) as exc:
        ses.send_email(Content={"Raw": {"Data": raw_mime()}}, EmailTags=[{"Name": "bad tag", "Value": "v"}])
    assert error_code(exc) == "BadRequestException"
    # sending paused on the configuration set
    ses.create_configuration_set(ConfigurationSetName="paused", SendingOptions={"SendingEnabled": False})
    with pytest.raises(ClientError) as exc:
        ses.send_email(Content={"Raw": {"Data": raw_mime()}}, ConfigurationSetName="paused")
    assert error_code(exc) == "SendingPausedException"


def test_send_recipients_and_inspection(start_emulator: StartEmulator) -> None:
    srv = start_emulator()
    ses = ses_client(srv.url)
    ses.create_email_identity(EmailIdentity="example.com")
    ses.create_configuration_set(ConfigurationSetName="mailroom")
    assert ses.get_account()["SendQuota"]["SentLast24Hours"] == 0

    # Destination absent: recipients come from the MIME headers
    raw = raw_mime(to="a@example.net, B <b@example.net>", extra="Cc: c@example.net\r\n")
    r1 = ses.send_email(
        Content={"Raw": {"Data": raw}},
        ConfigurationSetName="mailroom",
        EmailTags=[{"Name": "mailroom_email_id", "Value": "em_1"}, {"Name": "tenant", "Value": "t_1"}],
    )
    # Destination given: it wins over the headers; FromEmailAddress wins over From:
    r2 = ses.send_email(
        FromEmailAddress="Other <other@example.com>",
        Destination={"ToAddresses": ["x@example.net"], "BccAddresses": ["hidden@example.net"]},
        Content={"Raw": {"Data": raw}},
    )
    # Simple content
    r3 = ses.send_email(
        FromEmailAddress="simple@example.com",
        Destination={"ToAddresses": ["s@example.net"]},
        Content={
            "Simple": {
                "Subject": {"Data": "Simple subject"},
                "Body": {"Text": {"Data": "plain"}, "Html": {"Data": "<p>html</p>"}},
            }
        },
    )
    for r in (r1, r2, r3):
        assert SES_ID.match(r["MessageId"]), r["MessageId"]

    msgs = httpx.get(f"{srv.url}/_emulator/sent").json()["messages"]
    assert [m["message_id"] for m in msgs] == [r1["MessageId"], r2["MessageId"], r3["MessageId"]]
    m1, m2, m3 = msgs
    assert m1["from"] == "Mailroom <noreply@example.com>"
    assert m1["destinations"] == ["a@example.net", "b@example.net", "c@example.net"]
    assert m1["configuration_set"] == "mailroom"
    assert m1["tags"] == {"mailroom_email_id": "em_1", "tenant": "t_1"}
    assert m1["subject"] == "Hello"
    assert m1["raw"] == raw.decode()
    assert (m1["size"], m1["sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert m1["timestamp"].endswith("Z")
    assert m2["from"] == "Other <other@example.com>"
    assert m2["destinations"] == ["x@example.net", "hidden@example.net"]
    assert m2["configuration_set"] is None and m2["tags"] == {}
    assert m3["subject"] == "Simple subject"
    assert "<p>html</p>" in m3["raw"] and "multipart/alternative" in m3["raw"]
    light = httpx.get(f"{srv.url}/_emulator/sent", params={"raw": "false"}).json()["messages"]
    assert light == [{k: v for k, v in m.items() if k != "raw"} for m in msgs]

    assert ses.get_account()["SendQuota"]["SentLast24Hours"] == 3
    assert httpx.delete(f"{srv.url}/_emulator/sent").status_code == 200
    assert httpx.get(f"{srv.url}/_emulator/sent").json() == {"messages": []}


def test_get_account(start_emulator: StartEmulator) -> None:
    ses = ses_client(start_emulator(max_send_rate=200).url)
    account = ses.get_account()
    assert account["SendQuota"] == {"Max24HourSend": 50000.0, "MaxSendRate": 200.0, "SentLast24Hours": 0.0}
    assert account["SendingEnabled"] is True
    assert account["ProductionAccessEnabled"] is True
    assert account["EnforcementStatus"] == "HEALTHY"


def test_send_rate_enforcement(start_emulator: StartEmulator) -> None:
    ses = ses_client(start_emulator(max_send_rate=2, enforce_send_rate=True).url)
    ses.create_email_identity(EmailIdentity="example.com")
    throttled: list[ClientError] = []
    for _ in range(20):  # 2 per second allowed: some of 20 quick sends must be refused
        try:
            ses.send_email(Content={"Raw": {"Data": raw_mime()}})
        except ClientError as exc:
            throttled.append(exc)
    assert throttled
    assert {e.response["Error"]["Code"] for e in throttled} == {"TooManyRequestsException"}
    assert {e.response["ResponseMetadata"]["HTTPStatusCode"] for e in throttled} == {429}
    assert ses.get_account()["SendQuota"]["SentLast24Hours"] == 20 - len(throttled)


def test_rest_json_error_wire_format(start_emulator: StartEmulator) -> None:
    url = start_emulator().url
    resp = httpx.get(f"{url}/v2/email/identities/nope.example")
    assert resp.status_code == 404
    assert resp.headers["x-amzn-ErrorType"] == "NotFoundException"
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {"message": "Email identity nope.example does not exist."}
    assert resp.headers["x-amzn-RequestId"]

    # what boto3 puts on the wire for Raw content: base64 in JSON
    httpx.post(f"{url}/v2/email/identities", json={"EmailIdentity": "example.com"}).raise_for_status()
    body = {"Content": {"Raw": {"Data": base64.b64encode(raw_mime()).decode()}}}
    resp = httpx.post(f"{url}/v2/email/outbound-emails", json=body)
    assert resp.status_code == 200 and SES_ID.match(resp.json()["MessageId"])
    resp = httpx.post(f"{url}/v2/email/outbound-emails", content=b"{not json")
    assert resp.status_code == 400 and resp.headers["x-amzn-ErrorType"] == "BadRequestException"
    assert httpx.get(f"{url}/health").status_code == 200


def test_send_quota_throttling_and_send_times(start_emulator: StartEmulator) -> None:
    """issue 23: SendQuota adjustable at run time, throttling injected on demand (both codes, then
    sends go through again), every accepted send's timestamp with the busiest one-second window."""
    srv = start_emulator(max_send_rate=14, max_24_hour_send=200)
    ses = ses_client(srv.url)
    ses.create_email_identity(EmailIdentity="example.com")
    assert httpx.get(f"{srv.url}/_emulator/send-quota").json() == {"MaxSendRate": 14.0, "Max24HourSend": 200.0}
    changed = httpx.put(f"{srv.url}/_emulator/send-quota", json={"MaxSendRate": 50})
    assert changed.json() == {"MaxSendRate": 50.0, "Max24HourSend": 200.0}
    quota = ses.get_account()["SendQuota"]
    assert (quota["MaxSendRate"], quota["Max24HourSend"]) == (50.0, 200.0)
    for bad in ({"MaxSendRate": -1}, {"MaxSendRate": "x"}, {}, {"Max24HourSend": True}):
        assert httpx.put(f"{srv.url}/_emulator/send-quota", json=bad).status_code == 400
    assert httpx.get(f"{srv.url}/_emulator/send-quota").json()["MaxSendRate"] == 50.0

    for bad in ({"count": -1}, {"count": "2"}, {"code": "MessageRejected"}):
        assert httpx.post(f"{srv.url}/_emulator/throttle", json=bad).status_code == 400
    assert httpx.post(f"{srv.url}/_emulator/throttle", json={"count": 1}).json() == {"pending": 1}
    assert httpx.post(f"{srv.url}/_emulator/throttle", json={"count": 1, "code": "Throttling"}).json() == {"pending": 2}
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as exc:
            ses.send_email(Content={"Raw": {"Data": raw_mime()}})
        codes.append((error_code(exc), exc.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert codes == [("TooManyRequestsException", 429), ("Throttling", 400)]
    for _ in range(3):
        ses.send_email(Content={"Raw": {"Data": raw_mime()}})
    report = httpx.get(f"{srv.url}/_emulator/send-times").json()
    assert report["count"] == 3 and len(report["timestamps"]) == 3
    assert report["max_per_second"] == 3  # three quick sends: one window holds them all
    assert ses.get_account()["SendQuota"]["SentLast24Hours"] == 3
    later = httpx.get(f"{srv.url}/_emulator/send-times", params={"since": report["timestamps"][-1] + 1}).json()
    assert later == {"timestamps": [], "count": 0, "max_per_second": 0}


def test_max_in_window() -> None:
    from mailroom_ses_emulator.send_limits import max_in_window

    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5]) == 3  # [0, 1) holds 3; [0.5, 1.5) holds 3
    assert max_in_window([0.0, 0.999, 1.998]) == 2
    assert max_in_window([3.0, 1.0, 2.0, 1.2]) == 2  # unsorted input
