"""The suppression loop through all five services (real NATS, Postgres, the SES emulator's signed
SNS events): a hard bounce suppresses its address, the next send to it is dropped (403 alone; with
another recipient, SES is asked for that one only), DELETE lifts it and the send goes out; a
complaint and the test-mode simulator's `suppressionlist@` end in the right list with their reason."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, email_status, emulator_sent, verified_domain, wait_for

BOUNCE = "bounce@simulator.amazonses.com"
COMPLAINT = "complaint@simulator.amazonses.com"
SUCCESS = "success@simulator.amazonses.com"


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack)


@pytest.fixture(scope="module")
def sender(stack: Stack, tenant: Tenant) -> str:
    name = f"supp-{secrets.token_hex(3)}.test"
    verified_domain(stack, tenant, name)
    return f"Hello <hello@{name}>"


def _send(c: httpx.Client, sender: str, to: list[str]) -> httpx.Response:
    return c.post("/v1/emails", json={"from": sender, "to": to, "subject": "Hi", "text": "Hello"})


def _status(c: httpx.Client, email_id: str, wanted: str) -> dict[str, Any]:
    return wait_for(lambda: (e := email_status(c, email_id))["status"] == wanted and e, 20, what=f"{email_id} {wanted}")


def _entry(c: httpx.Client, address: str) -> dict[str, Any] | None:
    r = c.get("/v1/suppressions", params={"email": address})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data[0] if data else None


def test_bounce_suppresses_then_delete_lets_it_go_out(stack: Stack, tenant: Tenant, sender: str) -> None:
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        first = _send(c, sender, [BOUNCE])
        assert first.status_code == 202, first.text
        bounced_id = first.json()["id"]
        _status(c, bounced_id, "bounced")
        entry = wait_for(lambda: _entry(c, BOUNCE), 20, what="bounce suppression")
        assert (entry["reason"], entry["source_email_id"]) == ("bounce", bounced_id)

        def refused() -> bool:  # the API process learns its list is no longer empty (NOTIFY)
            r = _send(c, sender, [BOUNCE])
            return r.status_code == 403 and r.json()["error"] == "recipient_suppressed"

        wait_for(refused, 10, what="403 recipient_suppressed")

        mixed = _send(c, sender, [SUCCESS, BOUNCE])
        assert mixed.status_code == 202, mixed.text
        mixed_id = mixed.json()["id"]
        done = _status(c, mixed_id, "delivered")
        assert [(r["email"], r["status"]) for r in done["recipients"]] == [
            (SUCCESS, "delivered"),
            (BOUNCE, "suppressed"),
        ]
        on_ses = [m for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") == mixed_id]
        assert len(on_ses) == 1 and on_ses[0]["destinations"] == [SUCCESS]  # never sent to the suppressed one
        # Its EmailSuppressed went round the stream: one `suppressed` timeline entry with the reason.
        timeline = wait_for(
            lambda: [e for e in email_status(c, mixed_id)["events"] if e["type"] == "suppressed"] or None,
            20,
            what="suppressed timeline entry",
        )
        assert [e["data"] for e in timeline] == [{"recipients": [{"email": BOUNCE, "reason": "bounce"}]}]

        assert c.delete(f"/v1/suppressions/{BOUNCE}").status_code == 204
        again = _send(c, sender, [BOUNCE])
        assert again.status_code == 202, again.text
        _status(c, again.json()["id"], "bounced")  # it went out (and bounced again: suppressed again)
        entry = wait_for(lambda: _entry(c, BOUNCE), 20, what="suppressed again")
        assert entry["source_email_id"] == again.json()["id"]
        # One entry per address however many bounces.
        listed = c.get("/v1/suppressions", params={"reason": "bounce"}).json()["data"]
        assert [e["email"] for e in listed] == [BOUNCE]


def test_complaint_and_test_mode_simulator_suppress_with_their_reason(
    stack: Stack, tenant: Tenant, sender: str
) -> None:
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        complained = _send(c, sender, [COMPLAINT])
        assert complained.status_code == 202, complained.text
        _status(c, complained.json()["id"], "complained")
        entry = wait_for(lambda: _entry(c, COMPLAINT), 20, what="complaint suppression")
        assert entry["reason"] == "complaint"
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers("test"), timeout=10) as t:
        address = "suppressionlist@simulator.amazonses.com"
        r = _send(t, "dev@not-a-verified-domain.test", [address])
        assert r.status_code == 202, r.text
        _status(t, r.json()["id"], "bounced")
        entry = wait_for(lambda: _entry(t, address), 20, what="test-mode suppression")
        assert entry["reason"] == "bounce"
        assert _entry(t, COMPLAINT) is None  # the live list is another one
