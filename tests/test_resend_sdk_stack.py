"""Issue 21 through the whole stack with the official Resend Python SDK (`resend` on PyPI) pointed
at `/resend`: domains created, verified by the real verifier (public DNS of the dev server, SES of
the emulator), updated, listed and removed; an email sent from it, read back as delivered, listed;
suppressions that stop a send and are removed; API keys created, listed and revoked; webhooks
create/get/list/update/rotate/remove answered by the real webhooks service, an email sent and its
email.sent / email.delivered received by a real local HTTP receiver in Resend's shape with svix-*
headers that `resend.Webhooks.verify` accepts (both secrets during a rotation's overlap), templates
create/get/list/update/publish/duplicate/remove and a send of one that renders `{{{VAR}}}` with its
fallback, and the SDK's typed exceptions on bad input."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import resend
from mailroom_devstack.stack import Stack
from resend.exceptions import InvalidApiKeyError, MissingApiKeyError, ResendError, ValidationError
from support import Received, Tenant, WebhookReceiver, create_tenant, verified_domain, wait_for


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack, "Resend SDK webhooks")


@pytest.fixture(scope="module")
def domain(stack: Stack, tenant: Tenant) -> str:
    name = f"resend-{secrets.token_hex(3)}.test"
    verified_domain(stack, tenant, name)
    return name


@pytest.fixture
def sdk(stack: Stack, tenant: Tenant) -> Iterator[None]:
    """The SDK's module-level configuration, as an application sets it (RESEND_API_URL / _KEY)."""
    before = (resend.api_url, resend.api_key)
    resend.api_url, resend.api_key = stack.url("api") + "/resend", tenant.live_key
    yield
    resend.api_url, resend.api_key = before


def plain(answer: Any) -> dict[str, Any]:
    """An SDK answer without the `http_headers` the SDK adds to it."""
    return {k: v for k, v in dict(answer).items() if k != "http_headers"}


def verify(post: Received, secret: str) -> Any:
    return resend.Webhooks.verify(
        {
            "payload": post.body.decode(),
            "headers": {
                "id": post.headers["svix-id"],
                "timestamp": post.headers["svix-timestamp"],
                "signature": post.headers["svix-signature"],
            },
            "webhook_secret": secret,
        }
    )


def test_webhooks_crud_rotate_and_a_real_delivery_verified_by_the_sdk(
    stack: Stack, tenant: Tenant, domain: str, sdk: None
) -> None:
    with WebhookReceiver() as receiver, httpx.Client(base_url=stack.url("api"), headers=tenant.headers()) as c:
        created = resend.Webhooks.create({"endpoint": receiver.url, "events": ["email.sent", "email.delivered"]})
        wid, secret = created["id"], created["signing_secret"]
        assert created["object"] == "webhook" and wid.startswith("wh_") and secret.startswith("whsec_")

        got = resend.Webhooks.get(wid)
        assert (got["object"], got["id"], got["endpoint"], got["status"]) == ("webhook", wid, receiver.url, "enabled")
        assert got["events"] == ["email.sent", "email.delivered"] and got["signing_secret"] is None
        listed = resend.Webhooks.list()
        assert listed["object"] == "list" and listed["has_more"] is False
        assert [w["id"] for w in listed["data"]] == [wid]

        # A real email: its email.sent and email.delivered, in Resend's shape, verified by the SDK.
        r = c.post(
            "/v1/emails",
            json={
                "from": f"Acme <hi@{domain}>",
                "to": "success@simulator.amazonses.com",
                "subject": "Resend-shaped",
                "text": "body text stays out of webhooks",
                "tags": {"flow": "sdk"},
            },
        )
        assert r.status_code == 202, r.text
        email_id = r.json()["id"]

        def arrived(type_: str) -> list[Received]:
            return [
                p for p in receiver.received if p.json.get("type") == type_ and p.json["data"]["email_id"] == email_id
            ]

        for type_ in ("email.sent", "email.delivered"):
            [post] = wait_for(lambda t=type_: arrived(t) or None, timeout=30, what=type_)  # type: ignore[misc]
            event = verify(post, secret)
            assert "webhook-signature" not in post.headers and set(event) == {"type", "created_at", "data"}
            assert event["type"] == type_ and event["created_at"].endswith("Z")
            data = event["data"]
            assert (data["email_id"], data["from"], data["subject"]) == (
                email_id,
                f"Acme <hi@{domain}>",
                "Resend-shaped",
            )
            assert data["to"] == ["success@simulator.amazonses.com"] and data["tags"] == {"flow": "sdk"}
            assert b"body text stays out" not in post.body
            with pytest.raises(ValueError, match="no matching signature"):
                verify(post, "whsec_" + "QUJD" * 8)  # a wrong secret is refused

        # Update: events and status; a disabled endpoint gets nothing until enabled again.
        updated = resend.Webhooks.update({"webhook_id": wid, "events": ["email.bounced"], "status": "disabled"})
        assert (updated["object"], updated["id"]) == ("webhook", wid)
        got = resend.Webhooks.get(wid)
        assert (got["events"], got["status"]) == (["email.bounced"], "disabled")
        resend.Webhooks.update({"webhook_id": wid, "status": "enabled", "events": ["email.sent", "email.delivered"]})
        assert resend.Webhooks.get(wid)["status"] == "enabled"

        # Rotation: a new secret once; during the overlap both verify the next delivery.
        rotated = resend.Webhooks.rotate_signing_secret(wid)
        new_secret = rotated["signing_secret"]
        assert rotated["id"] == wid and new_secret.startswith("whsec_") and new_secret != secret
        r = c.post(
            "/v1/emails",
            json={"from": f"hi@{domain}", "to": "success@simulator.amazonses.com", "subject": "After", "text": "x"},
        )
        assert r.status_code == 202, r.text
        email_id = r.json()["id"]
        [post] = wait_for(lambda: arrived("email.sent") or None, timeout=30, what="sent after rotation")
        assert verify(post, new_secret)["data"]["email_id"] == email_id
        assert verify(post, secret)["data"]["email_id"] == email_id

        # Typed exceptions: unknown / unsupported event names are Resend's validation_error.
        with pytest.raises(ValidationError, match="not supported"):
            resend.Webhooks.create({"endpoint": receiver.url, "events": ["contact.created"]})  # type: ignore[list-item]
        with pytest.raises(ValidationError, match="unknown event type"):
            resend.Webhooks.create({"endpoint": receiver.url, "events": ["email.nope"]})  # type: ignore[list-item]
        with pytest.raises(ValidationError):
            resend.Webhooks.create({"endpoint": "http://169.254.169.254/latest", "events": ["email.sent"]})
        assert [w["id"] for w in resend.Webhooks.list()["data"]] == [wid]  # nothing created by those

        removed = resend.Webhooks.remove(wid)
        assert (removed["id"], removed["deleted"]) == (wid, True)
        with pytest.raises(ResendError) as missing:
            resend.Webhooks.get(wid)
        assert missing.value.code == 404 and missing.value.error_type == "not_found"
        assert resend.Webhooks.list()["data"] == []

        # Another tenant's key sees none of it; no key is missing_api_key.
        other = create_tenant(stack, "Resend SDK other")
        resend.api_key = other.live_key
        assert resend.Webhooks.list()["data"] == []
        resend.api_key = ""
        with pytest.raises(MissingApiKeyError):
            resend.Webhooks.list()
        resend.api_key = "mr_live_" + "x" * 40
        with pytest.raises(InvalidApiKeyError):
            resend.Webhooks.list()


def test_templates_through_the_sdk_and_a_send_with_the_fallback(
    stack: Stack, tenant: Tenant, domain: str, sdk: None
) -> None:
    alias = f"welcome-{secrets.token_hex(3)}"
    created = resend.Templates.create(
        {
            "name": "Welcome",
            "alias": alias,
            "subject": "Welcome {{{NAME}}}",
            "html": "<p>Hi {{{NAME}}}, you have {{{CREDITS}}} credits</p>",
            "variables": [
                {"key": "NAME", "type": "string", "fallback_value": "friend"},
                {"key": "CREDITS", "type": "number", "fallback_value": 5},
            ],
        }
    )
    tid = created["id"]
    assert created["object"] == "template" and tid.startswith("tpl_")
    got = resend.Templates.get(tid)
    assert (got["name"], got["alias"], got["status"]) == ("Welcome", alias, "draft")
    assert got["html"] == "<p>Hi {{{NAME}}}, you have {{{CREDITS}}} credits</p>"
    assert got["variables"] == [
        {"key": "NAME", "type": "string", "fallback_value": "friend"},
        {"key": "CREDITS", "type": "number", "fallback_value": 5},
    ]
    assert resend.Templates.get(alias)["id"] == tid

    assert resend.Templates.publish(tid)["id"] == tid
    assert resend.Templates.get(tid)["status"] == "published"
    updated = resend.Templates.update({"id": tid, "subject": "Hello {{{NAME}}}"})
    assert updated["id"] == tid
    assert (resend.Templates.get(tid)["subject"], resend.Templates.get(tid)["status"]) == ("Hello {{{NAME}}}", "draft")
    resend.Templates.publish(tid)

    # A send naming it (the same template send R1's /resend/emails makes), NAME left out.
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers()) as c:
        r = c.post(
            "/v1/emails",
            json={
                "from": f"hi@{domain}",
                "to": "success@simulator.amazonses.com",
                "template": {"id": tid, "data": {"CREDITS": 12}},
            },
        )
        assert r.status_code == 202, r.text
        content = c.get(f"/v1/emails/{r.json()['id']}", params={"include": "content"}).json()
    assert content["subject"] == "Hello friend"
    assert content["html"].startswith("<p>Hi friend, you have 12 credits</p>")

    copy = resend.Templates.duplicate(tid)
    assert copy["id"] != tid
    listed = resend.Templates.list({"limit": 10})
    assert listed["object"] == "list" and {t["id"] for t in listed["data"]} >= {tid, copy["id"]}
    assert next(t for t in listed["data"] if t["id"] == copy["id"])["status"] == "draft"
    assert resend.Templates.remove(copy["id"])["deleted"] is True

    with pytest.raises(ValidationError, match="declares no variable"):
        resend.Templates.create({"name": "Bad", "html": "<p>{{{MISSING}}}</p>"})
    with pytest.raises(ValidationError):
        resend.Templates.create(
            {"name": "Bad", "html": "x", "variables": [{"key": "N", "type": "number", "fallback_value": "five"}]}
        )
    with pytest.raises(ResendError) as missing:
        resend.Templates.get("tpl_" + "0" * 26)
    assert missing.value.code == 404


def test_domains_emails_suppressions_and_api_keys_through_the_sdk(stack: Stack, tenant: Tenant, sdk: None) -> None:
    name = f"resend-dom-{secrets.token_hex(3)}.test"
    created: Any = resend.Domains.create({"name": name, "custom_return_path": "mail", "open_tracking": True})
    did = created["id"]
    assert (created["name"], created["open_tracking"], created["click_tracking"]) == (name, True, False)
    shapes = {(r["record"], r["type"], r["name"]) for r in created["records"]}
    assert {("SPF", "MX", "mail"), ("SPF", "TXT", "mail"), ("DMARC", "TXT", "_dmarc")} <= shapes, shapes
    dkim = [r for r in created["records"] if r["record"] == "DKIM"]
    assert len(dkim) == 3 and all(r["type"] == "CNAME" and r["name"].endswith("._domainkey") for r in dkim)
    assert all(r["ttl"] == "Auto" and r["status"] in ("pending", "verified") for r in created["records"])
    mx = next(r for r in created["records"] if r["type"] == "MX")
    assert mx["priority"] == 10 and mx["value"].startswith("feedback-smtp.")
    assert all("priority" not in r for r in created["records"] if r["type"] != "MX")

    assert plain(resend.Domains.verify(did)) == {"object": "domain", "id": did}
    wait_for(lambda: resend.Domains.get(did)["status"] == "verified", what="domain verified")
    got: Any = resend.Domains.get(did)
    required = [r for r in got["records"] if r["record"] != "DMARC"]
    assert {r["status"] for r in required} == {"verified"}
    assert plain(resend.Domains.update({"id": did, "click_tracking": True})) == {"object": "domain", "id": did}
    assert resend.Domains.get(did)["click_tracking"] is True
    with pytest.raises(ValidationError):
        resend.Domains.update({"id": did, "tls": "enforced"})
    with pytest.raises(ValidationError):
        resend.Domains.create({"name": "co.uk"})
    listed = resend.Domains.list()
    assert listed["object"] == "list" and did in [d["id"] for d in listed["data"]]

    # An email from it goes out; the SDK reads it back delivered, newest in the list.
    sent = resend.Emails.send(
        {"from": f"Acme <hi@{name}>", "to": "success@simulator.amazonses.com", "subject": "via sdk", "text": "t"}
    )
    wait_for(lambda: resend.Emails.get(sent["id"])["last_event"] == "delivered", what="delivered")
    newest = resend.Emails.list({"limit": 1})
    assert newest["has_more"] is True and [e["id"] for e in newest["data"]] == [sent["id"]]

    # A suppressed address alone is refused (nothing queued) until it is removed.
    assert plain(resend.Suppressions.add({"email": "Kept@Example.com"})) == {
        "object": "suppression",
        "id": "kept@example.com",
    }
    assert resend.Suppressions.get("kept@example.com")["origin"] == "manual"
    assert "kept@example.com" in [s["id"] for s in resend.Suppressions.list()["data"]]
    mail: Any = {"from": f"hi@{name}", "to": "kept@example.com", "subject": "s", "text": "t"}
    with pytest.raises(ResendError) as refused:
        resend.Emails.send(mail)
    assert refused.value.error_type == "recipient_suppressed"
    assert resend.Suppressions.remove("kept@example.com")["deleted"] is True
    assert resend.Emails.send(mail)["id"].startswith("msg_")

    # API keys: a sending key sends; once removed it is refused.
    key = resend.ApiKeys.create({"name": "sdk sender", "permission": "sending_access"})
    assert key["token"].startswith("mr_live_")
    assert key["id"] in [k["id"] for k in resend.ApiKeys.list()["data"]]
    with httpx.Client(base_url=stack.url("api"), timeout=10) as c:
        as_key = {"Authorization": f"Bearer {key['token']}"}
        assert c.post("/resend/emails", json=mail, headers=as_key).status_code == 200
        assert plain(resend.ApiKeys.remove(key["id"])) == {"object": "api_key", "id": key["id"], "deleted": True}
        wait_for(lambda: c.get("/resend/emails", headers=as_key).status_code == 403, what="revoked key refused")

    # Removing the domain deletes its identity: later sends from it are refused.
    assert plain(resend.Domains.remove(did)) == {"object": "domain", "id": did, "deleted": True}
    with pytest.raises(ResendError) as unverified:
        resend.Emails.send(mail)
    assert unverified.value.error_type == "validation_error"
    assert did not in [d["id"] for d in resend.Domains.list()["data"]]


def test_emails_through_the_sdk_replay_schedule_batch_and_typed_errors(
    stack: Stack, tenant: Tenant, domain: str, sdk: None
) -> None:
    sent = resend.Emails.send(
        {
            "from": f"Acme <hi@{domain}>",
            "to": ["ada@example.com"],
            "subject": "From the SDK",
            "html": "<p>sdk</p>",
            "tags": [{"name": "via", "value": "sdk"}],
            "attachments": [{"filename": "n.txt", "content": list(b"bytes")}],
        },
        {"idempotency_key": "sdk-key-1"},
    )
    again = resend.Emails.send(
        {
            "from": f"Acme <hi@{domain}>",
            "to": ["ada@example.com"],
            "subject": "From the SDK",
            "html": "<p>sdk</p>",
            "tags": [{"name": "via", "value": "sdk"}],
            "attachments": [{"filename": "n.txt", "content": list(b"bytes")}],
        },
        {"idempotency_key": "sdk-key-1"},
    )
    assert again["id"] == sent["id"]
    got: dict[str, Any] = dict(resend.Emails.get(sent["id"]))
    assert got["object"] == "email" and got["subject"] == "From the SDK"
    assert got["tags"] == [{"name": "via", "value": "sdk"}]

    later = resend.Emails.send(
        {"from": f"hi@{domain}", "to": "ada@example.com", "subject": "L", "text": "l", "scheduled_at": "in 1 min"}
    )
    when = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert resend.Emails.update({"id": later["id"], "scheduled_at": when})["id"] == later["id"]
    assert resend.Emails.cancel(later["id"])["id"] == later["id"]

    with pytest.raises(resend.exceptions.ValidationError):
        resend.Emails.send({"from": f"hi@{domain}", "to": "nope", "subject": "x", "text": "x"})
    with pytest.raises(resend.exceptions.ResendError) as missing:
        resend.Emails.get("msg_" + "0" * 26)
    assert missing.value.error_type == "not_found"
    one: Any = {"from": f"hi@{domain}", "to": "ada@example.com", "subject": "B", "text": "b"}
    both = resend.Batch.send([one, {**one, "to": "nope"}], {"batch_validation": "permissive"})
    assert len(both["data"]) == 1 and [e["index"] for e in both.get("errors", [])] == [1]
    with pytest.raises(resend.exceptions.ValidationError):
        resend.Batch.send([one, {**one, "to": "nope"}], {"batch_validation": "strict"})
    resend.api_key = "mr_live_" + "x" * 40
    with pytest.raises(resend.exceptions.InvalidApiKeyError):
        resend.Emails.get(sent["id"])
    resend.api_key = tenant.live_key
