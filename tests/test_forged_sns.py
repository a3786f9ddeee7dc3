"""Forged SNS notifications are refused by the running events service and create no event."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from mailroom_devstack.stack import TOPIC_ARN, Stack
from support import create_tenant, email_status, verified_domain, wait_for


def emulator_cert_url(stack: Stack) -> str:
    """The emulator's real SigningCertURL (trusted by the events service), from its delivery log."""
    notes = httpx.get(stack.url("emulator") + "/_emulator/notifications").json()["notifications"]
    return next(n["signing_cert_url"] for n in notes if n.get("signing_cert_url"))


@pytest.fixture(scope="module")
def delivered_email(stack: Stack) -> tuple[str, dict]:
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "forged.test")
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        r = c.post(
            "/v1/emails",
            json={"from": "a@forged.test", "to": "bounce@simulator.amazonses.com", "subject": "s", "text": "t"},
        )
        email_id = r.json()["id"]
        email = wait_for(lambda: (e := email_status(c, email_id))["status"] == "bounced" and e, what="bounced")
    return email_id, {"headers": tenant.headers(), "email": email}


def forged_delivery(
    email_id: str, tenant_id: str, *, cert_url: str, topic: str = TOPIC_ARN, signature: str | None = None
) -> bytes:
    record = {
        "eventType": "Delivery",
        "mail": {
            "timestamp": "2026-01-01T00:00:00.000Z",
            "messageId": "forged-1",
            "source": "a@forged.test",
            "destination": ["bounce@simulator.amazonses.com"],
            "tags": {"mailroom_email_id": [email_id], "mailroom_tenant_id": [tenant_id], "mailroom_mode": ["live"]},
        },
        "delivery": {
            "timestamp": "2026-01-01T00:00:01.000Z",
            "recipients": ["bounce@simulator.amazonses.com"],
            "processingTimeMillis": 1,
            "smtpResponse": "250 ok",
            "reportingMTA": "x",
        },
    }
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "00000000-0000-0000-0000-000000000001",
            "TopicArn": topic,
            "Subject": "Amazon SES Email Event Notification",
            "Message": json.dumps(record) + "\n",
            "Timestamp": "2026-01-01T00:00:01.000Z",
            "SignatureVersion": "2",
            "Signature": signature or base64.b64encode(b"\x00" * 256).decode(),
            "SigningCertURL": cert_url,
            "UnsubscribeURL": "https://example.invalid/",
        }
    ).encode()


def test_forged_notifications_are_refused_and_change_nothing(stack: Stack, delivered_email: tuple[str, dict]) -> None:
    email_id, ctx = delivered_email
    tenant_id = ctx["email"].get("tenant_id", "ten_x")
    sns = stack.url("events") + "/ses/sns"
    emulator_cert = emulator_cert_url(stack)
    cases = {
        "bad signature": forged_delivery(email_id, tenant_id, cert_url=emulator_cert),
        "wrong certificate host": forged_delivery(email_id, tenant_id, cert_url="http://evil.example/cert.pem"),
        "aws-looking host over http": forged_delivery(
            email_id, tenant_id, cert_url="http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem"
        ),
        "unknown topic": forged_delivery(
            email_id, tenant_id, cert_url=emulator_cert, topic="arn:aws:sns:us-east-1:000000000000:someone-else"
        ),
    }
    for what, body in cases.items():
        r = httpx.post(
            sns,
            content=body,
            headers={"Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": "Notification"},
        )
        assert r.status_code == 403, (what, r.status_code, r.text)
        assert r.json()["error"] == "forbidden"
    r = httpx.post(sns, content=b"{not json", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_json"
    # The bounced email did not become delivered, and its timeline gained nothing.
    with httpx.Client(base_url=stack.url("api"), headers=ctx["headers"]) as c:
        after = email_status(c, email_id)
    assert after["status"] == "bounced"
    assert [e["type"] for e in after["events"]] == [e["type"] for e in ctx["email"]["events"]]
