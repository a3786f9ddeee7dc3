"""One email through all five services on real NATS JetStream, real Postgres, the SES
emulator (signed SNS events) and a real webhook receiver — the README's quick start."""

from __future__ import annotations

import time

import httpx
import pytest
from mailroom_devstack.stack import Stack
from standardwebhooks.webhooks import Webhook
from support import (
    Tenant,
    WebhookReceiver,
    create_tenant,
    email_status,
    sent_email_ids,
    verified_domain,
    wait_for,
)


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack)


@pytest.fixture(scope="module")
def domain(stack: Stack, tenant: Tenant) -> dict:
    return verified_domain(stack, tenant, "example.test")


def send(client: httpx.Client, to: str, from_: str = "Hello <hello@example.test>", **extra: object) -> str:
    r = client.post("/v1/emails", json={"from": from_, "to": to, "subject": "Hi", "text": "Hello", **extra})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["id"].startswith("msg_")
    return str(body["id"])


def final_status(client: httpx.Client, email_id: str, wanted: str, timeout: float = 15.0) -> dict:
    return wait_for(
        lambda: (e := email_status(client, email_id))["status"] == wanted and e, timeout, what=f"{email_id} {wanted}"
    )


def timeline(email: dict) -> list[str]:
    return [e["type"] for e in email["events"]]


def test_domain_records_and_verification(stack: Stack, tenant: Tenant, domain: dict) -> None:
    records = domain["records"]
    dkim = [r for r in records if r["purpose"] == "dkim"]
    assert len(dkim) == 3
    for r in dkim:
        assert r["type"] == "CNAME" and r["name"].endswith("._domainkey.example.test")
        assert r["value"].endswith(".dkim.amazonses.com")
    mx = next(r for r in records if r["type"] == "MX")
    assert mx["name"] == "bounce.example.test" and mx["value"] == "feedback-smtp.us-east-1.amazonses.com"
    assert mx["priority"] == 10
    assert any(r["type"] == "TXT" and r["value"] == "v=spf1 include:amazonses.com ~all" for r in records)
    assert any(r["name"] == "_dmarc.example.test" for r in records)
    identities = httpx.get(stack.url("emulator") + "/_emulator/identities").json()
    assert "example.test" in str(identities)


def test_live_send_is_delivered_with_timeline_and_signed_webhooks(stack: Stack, tenant: Tenant, domain: dict) -> None:
    with (
        WebhookReceiver() as receiver,
        httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c,
    ):
        wh = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.sent", "email.delivered"]})
        assert wh.status_code == 201, wh.text
        secret = wh.json()["secret"]
        assert secret.startswith("whsec_")
        started = time.monotonic()
        email_id = send(c, "success@simulator.amazonses.com")
        assert email_status(c, email_id)["status"] in {"queued", "sent", "delivered"}  # read-your-writes
        email = final_status(c, email_id, "delivered")
        elapsed = time.monotonic() - started
        assert timeline(email) == ["queued", "sent", "delivered"], email["events"]
        assert email["recipients"] == [
            {"email": "success@simulator.amazonses.com", "type": "to", "status": "delivered"}
        ]
        assert elapsed < 10, f"delivered after {elapsed:.2f}s"
        assert sent_email_ids(stack).count(email_id) == 1

        wait_for(lambda: receiver.of_type("email.delivered", email_id), what="delivered webhook")
        hook = Webhook(secret)
        for type_ in ("email.sent", "email.delivered"):
            got = receiver.of_type(type_, email_id)
            assert len(got) == 1, [r.json for r in receiver.received]
            payload = hook.verify(got[0].body, got[0].headers)
            assert payload["type"] == type_ and payload["id"].startswith("evt_")
            assert payload["data"]["email_id"] == email_id
            assert payload["data"]["to"] and payload["data"]["subject"] == "Hi"
            assert payload["data"]["mode"] == "live"
            forged = dict(got[0].headers, **{"webhook-signature": "v1,AAAA"})
            with pytest.raises(Exception):  # noqa: B017 - any verification error
                hook.verify(got[0].body, forged)
        assert not receiver.of_type("email.queued")  # not subscribed


@pytest.mark.parametrize(
    ("address", "status", "expected"),
    [
        ("bounce@simulator.amazonses.com", "bounced", ["queued", "sent", "bounced"]),
        ("complaint@simulator.amazonses.com", "complained", ["queued", "sent", "delivered", "complained"]),
    ],
)
def test_bounce_and_complaint(
    stack: Stack, tenant: Tenant, domain: dict, address: str, status: str, expected: list[str]
) -> None:
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        email_id = send(c, address)
        final_status(c, email_id, status)

        def with_full_timeline() -> dict | None:
            got = email_status(c, email_id)
            return got if timeline(got) == expected else None

        email = wait_for(with_full_timeline, what=f"timeline {expected}")
        assert email["recipients"][0]["status"] == status
        if status == "bounced":
            bounce = next(e for e in email["events"] if e["type"] == "bounced")
            assert "Permanent" in str(bounce["data"])


def test_test_mode_needs_no_domain_and_never_reaches_ses(stack: Stack, tenant: Tenant) -> None:
    with (
        WebhookReceiver() as receiver,
        httpx.Client(base_url=stack.url("api"), headers=tenant.headers("test"), timeout=10) as c,
    ):
        wh = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]})
        assert wh.status_code == 201, wh.text
        outcomes = {
            "success@simulator.amazonses.com": ("delivered", ["queued", "sent", "delivered"]),
            "bounce@simulator.amazonses.com": ("bounced", ["queued", "sent", "bounced"]),
            "complaint@simulator.amazonses.com": ("complained", ["queued", "sent", "delivered", "complained"]),
        }
        ids = {addr: send(c, addr, from_="dev@not-a-verified-domain.test") for addr in outcomes}
        for addr, (status, events) in outcomes.items():
            final_status(c, ids[addr], status)
            wait_for(lambda a=addr, ev=events: timeline(email_status(c, ids[a])) == ev, what=f"{addr} timeline")  # type: ignore[misc]
        delivered = wait_for(
            lambda: receiver.of_type("email.delivered", ids["success@simulator.amazonses.com"]),
            what="test-mode webhook",
        )
        payload = Webhook(wh.json()["secret"]).verify(delivered[0].body, delivered[0].headers)
        assert payload["data"]["mode"] == "test"
        on_emulator = set(sent_email_ids(stack))
        assert not on_emulator & set(ids.values())
        # A live key cannot see test emails.
        live = httpx.get(
            f"{stack.url('api')}/v1/emails/{ids['success@simulator.amazonses.com']}", headers=tenant.headers("live")
        )
        assert live.status_code == 404


def test_live_key_needs_a_verified_domain(stack: Stack, tenant: Tenant) -> None:
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        r = c.post(
            "/v1/emails",
            json={"from": "a@unverified.test", "to": "success@simulator.amazonses.com", "subject": "x", "text": "y"},
        )
        assert r.status_code == 403 and r.json()["error"] == "domain_not_verified"


def test_tenants_cannot_see_each_other(stack: Stack, tenant: Tenant, domain: dict) -> None:
    other = create_tenant(stack)
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        email_id = send(c, "success@simulator.amazonses.com")
    r = httpx.get(f"{stack.url('api')}/v1/emails/{email_id}", headers=other.headers())
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = httpx.get(f"{stack.url('api')}/v1/domains/{domain['id']}", headers=other.headers())
    assert r.status_code == 404
    r = httpx.post(f"{stack.url('api')}/v1/domains", json={"name": "example.test"}, headers=other.headers())
    assert r.status_code == 409 and r.json()["error"] == "conflict"
