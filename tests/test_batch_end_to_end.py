"""A batch through all five services: its accepted items (one statement, one outbox batch) reach
the SES emulator once each and are delivered; its refused item never leaves the API; replaying the
batch under its Idempotency-Key sends nothing more."""

from __future__ import annotations

import secrets

import httpx
from mailroom_devstack.stack import Stack
from support import create_tenant, email_status, emulator_sent, verified_domain, wait_for


def test_a_batch_is_sent_and_delivered_once(stack: Stack) -> None:
    tenant = create_tenant(stack)
    domain = f"batch-{secrets.token_hex(3)}.example.test"
    verified_domain(stack, tenant, domain)
    items = [
        {
            "from": f"Batch <hi@{domain}>",
            "to": "success@simulator.amazonses.com",
            "subject": f"item {i}",
            "text": f"body {i}",
            "tags": {"item": str(i)},
        }
        for i in range(3)
    ]
    items.insert(1, {**items[0], "to": "not an address"})
    headers = {**tenant.headers(), "Idempotency-Key": f"e2e-{secrets.token_hex(4)}"}
    with httpx.Client(base_url=stack.url("api"), headers=headers, timeout=10) as client:
        resp = client.post("/v1/emails/batch", json={"emails": items})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert (body["queued"], body["failed"]) == (3, 1)
        assert body["data"][1]["param"] == "to"
        ids = [d["id"] for d in body["data"] if "id" in d]

        def delivered() -> bool:
            return all(email_status(client, i)["status"] == "delivered" for i in ids)

        wait_for(delivered, timeout=30, what="every accepted item delivered")
        replay = client.post("/v1/emails/batch", json={"emails": items})
        assert replay.headers["idempotent-replayed"] == "true" and replay.content == resp.content
        one = email_status(client, ids[2])
        assert one["subject"] == "item 2" and one["tags"] == {"item": "2"}
        assert [e["type"] for e in one["events"]][:2] == ["queued", "sent"]
    sent = [m for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") in ids]
    assert sorted(m["tags"]["mailroom_email_id"] for m in sent) == sorted(ids)  # once each
    assert {m["tags"]["item"] for m in sent} == {"0", "1", "2"}
