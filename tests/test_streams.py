"""Streams, tracking and one-click unsubscribe through the whole stack: the configuration set each
send reached the SES emulator with (stream and tracking, explicit and the domain's default), the
MIME it got (parsed back with the standard library), and a real POST on the unsubscribe URL taken
from that MIME."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import httpx
import psycopg
import pytest
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, email_status, emulator_sent, wait_for

TRACKING = ("OPEN", "CLICK")


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack)


def add_verified_domain(stack: Stack, tenant: Tenant, name: str, **tracking: bool) -> None:
    with httpx.Client(base_url=stack.url("api"), timeout=10, headers=tenant.headers()) as c:
        r = c.post("/v1/domains", json={"name": name, **tracking})
        assert r.status_code == 201, r.text
        domain_id = r.json()["id"]
        wait_for(lambda: c.get(f"/v1/domains/{domain_id}").json()["status"] == "verified", 20, what=name)


def send(stack: Stack, tenant: Tenant, body: dict[str, Any]) -> str:
    r = httpx.post(stack.url("api") + "/v1/emails", json=body, headers=tenant.headers(), timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def sent(stack: Stack, email_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((m for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") == email_id), None)

    return wait_for(find, 20, what=f"{email_id} at the SES emulator")


def parse(raw: str) -> EmailMessage:
    msg = email.message_from_bytes(raw.encode(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def suppressions(stack: Stack, tenant_id: str) -> list[tuple[str, str, str, str | None]]:
    with psycopg.connect(stack.db_url) as conn:
        rows = conn.execute(
            "SELECT mode, email, reason, source_email_id FROM api.suppressions WHERE tenant_id = %s ORDER BY email",
            (tenant_id,),
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_every_configuration_set_exists_with_tracking_only_where_on(stack: Stack) -> None:
    sets = httpx.get(stack.url("emulator") + "/_emulator/configuration-sets", timeout=10).json()["configuration_sets"]
    by_name = {cs["name"]: cs for cs in sets}
    for base in ("mailroom-transactional", "mailroom-broadcast"):
        for suffix, on in {"": (), "-opens": ("OPEN",), "-clicks": ("CLICK",), "-opens-clicks": TRACKING}.items():
            [dest] = by_name[base + suffix]["event_destinations"]
            types = set(dest["MatchingEventTypes"])
            assert {"SEND", "DELIVERY", "BOUNCE", "COMPLAINT"} <= types
            assert types & set(TRACKING) == set(on), base + suffix


def test_configuration_set_follows_stream_and_tracking(stack: Stack, tenant: Tenant) -> None:
    add_verified_domain(stack, tenant, "plain.streams.test")
    add_verified_domain(stack, tenant, "tracked.streams.test", track_opens=True, track_clicks=True)
    base = {
        "to": "success@simulator.amazonses.com",
        "subject": "Hi",
        "html": "<p>Hi <a href='https://a.test'>a</a></p>",
    }
    cases: list[tuple[dict[str, Any], str]] = [
        ({"from": "a@plain.streams.test"}, "mailroom-transactional"),
        ({"from": "a@plain.streams.test", "track_opens": True}, "mailroom-transactional-opens"),
        ({"from": "a@tracked.streams.test"}, "mailroom-transactional-opens-clicks"),  # the domain's default
        ({"from": "a@tracked.streams.test", "track_opens": False}, "mailroom-transactional-clicks"),
        ({"from": "a@plain.streams.test", "stream": "broadcast"}, "mailroom-broadcast"),
        ({"from": "a@tracked.streams.test", "stream": "broadcast", "track_clicks": False}, "mailroom-broadcast-opens"),
    ]
    ids = [(send(stack, tenant, {**base, **extra}), expected) for extra, expected in cases]
    for email_id, expected in ids:
        message = sent(stack, email_id)
        assert message["configuration_set"] == expected, (email_id, expected)
        msg = parse(message["raw"])
        if expected.startswith("mailroom-transactional"):
            assert msg["List-Unsubscribe"] is None and msg["List-Unsubscribe-Post"] is None
        else:
            assert msg["List-Unsubscribe"] and msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_one_click_unsubscribe_from_the_sent_mime(stack: Stack, tenant: Tenant) -> None:
    email_id = send(
        stack,
        tenant,
        {
            "from": "News <news@plain.streams.test>",
            "to": "Reader <Reader@Example.test>",
            "subject": "Our news",
            "text": "Hello",
            "stream": "broadcast",
        },
    )
    msg = parse(sent(stack, email_id)["raw"])
    assert msg["To"] == "Reader <Reader@example.test>"  # the domain normalised, the local part kept
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header = str(msg["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">") and "," not in header  # no mailto configured here
    url = header[1:-1]
    assert url.startswith(stack.url("api") + "/v1/unsubscribe/v1.")
    with httpx.Client(timeout=10) as c:
        page = c.get(url)
        assert page.status_code == 200 and '<form method="post">' in page.text
        assert suppressions(stack, tenant.id) == []  # GET changes nothing
        # What Gmail / Yahoo do (RFC 8058): POST the one-click body, no credentials.
        r = c.post(
            url, content=b"List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert r.status_code == 200, r.text
        assert suppressions(stack, tenant.id) == [("live", "reader@example.test", "unsubscribe", email_id)]
        tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
        assert c.post(tampered).status_code == 404
    assert suppressions(stack, tenant.id) == [("live", "reader@example.test", "unsubscribe", email_id)]
    # Issue 22: its EmailUnsubscribed went round the stream (the email log records it once).
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as api:

        def unsubscribed() -> list[dict[str, Any]] | None:
            timeline = email_status(api, email_id)["events"]
            return [e for e in timeline if e["type"] == "unsubscribed"] or None

        [entry] = wait_for(unsubscribed, 20, what="unsubscribed timeline entry")
    assert entry["data"]["source"] == "OneClick" and entry["data"]["recipients"] == ["Reader@example.test"]
    # The token is a capability naming the address: the API's request lines show the route only.
    api_log = (stack.base_dir / "logs" / "api.log").read_text(errors="replace")
    assert "/v1/unsubscribe/{token}" in api_log
    assert url.rsplit("/", 1)[1][:40] not in api_log
