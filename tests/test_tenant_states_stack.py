"""issue 23 through the whole stack (devstack: real api, sender, SES emulator, NATS, Postgres): an
operator pauses a tenant through the admin API; its scheduled emails come due (the api publishes
EmailQueued) and are held by the sender, neither sent nor failed; on resume they go out, each
exactly once. Blocking fails the queued email with reason `tenant_blocked`; it is not sent later.
The operator API's view of the sender (`GET /admin/v1/sending`, answered by the real sender over
NATS) shows the paused tenant's held emails, and no longer once they went out."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from mailroom_devstack.stack import Stack
from support import create_tenant, email_status, sent_email_ids, verified_domain, wait_for

DUE_IN = 4.0


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _schedule(c: httpx.Client, domain: str, n: int) -> tuple[list[str], datetime]:
    when = datetime.now(UTC) + timedelta(seconds=DUE_IN)
    ids = []
    for i in range(n):
        body = {"from": f"hi@{domain}", "to": f"held{i}@example.org", "subject": "s", "text": "x"}
        r = c.post("/v1/emails", json={**body, "scheduled_at": rfc3339(when)})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids, when


def _set_status(stack: Stack, tenant_id: str, status: str) -> None:
    admin = {"Authorization": f"Bearer {stack.operator_token}"}
    r = httpx.patch(
        f"{stack.url('api')}/admin/v1/tenants/{tenant_id}", json={"status": status}, headers=admin, timeout=10
    )
    assert r.status_code == 200 and r.json()["status"] == status, r.text


def _held_by(stack: Stack, tenant_id: str) -> dict[str, int]:
    """The tenant's emails in the sender's queue by reason, as the operator API shows them."""
    admin = {"Authorization": f"Bearer {stack.operator_token}"}
    r = httpx.get(f"{stack.url('api')}/admin/v1/sending", headers=admin, timeout=15)
    assert r.status_code == 200, r.text
    body = r.json()
    assert {s["stream"] for s in body["streams"]} == {"transactional", "broadcast"}
    held: dict[str, int] = {}
    for t in body["tenants"]:
        if t["tenant_id"] == tenant_id:
            held = t["held"]
    return held


def test_pause_holds_scheduled_mail_resume_sends_it_once_and_block_fails_it(stack: Stack) -> None:
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "pause.test")
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        held, due = _schedule(c, "pause.test", 3)
        _set_status(stack, tenant.id, "paused")
        body = {"from": "hi@pause.test", "to": "x@example.org", "subject": "s", "text": "x"}
        refused = c.post("/v1/emails", json=body)
        assert (refused.status_code, refused.json()["error"]) == (403, "tenant_paused"), refused.text
        # Due and published: the sender holds them. Nothing reaches SES, nothing fails.
        while datetime.now(UTC) < due + timedelta(seconds=6):
            time.sleep(0.5)
        assert not set(held) & set(sent_email_ids(stack))
        statuses = {e: email_status(c, e)["status"] for e in held}
        assert all(s not in ("failed", "sent", "delivered") for s in statuses.values()), statuses
        wait_for(
            lambda: _held_by(stack, tenant.id) == {"tenant_paused": 3} or None,
            30,
            interval=0.5,
            what="the operator API shows the paused tenant's 3 held emails",
        )

        _set_status(stack, tenant.id, "active")

        def all_sent() -> bool | None:
            ids = sent_email_ids(stack)
            return True if all(e in ids for e in held) else None

        wait_for(all_sent, 30, what="held emails sent after resume")
        time.sleep(2.0)  # a duplicate would show up now
        ids = sent_email_ids(stack)
        assert all(ids.count(e) == 1 for e in held), [ids.count(e) for e in held]
        wait_for(
            lambda: _held_by(stack, tenant.id) == {} or None,
            30,
            interval=0.5,
            what="the operator API no longer shows the tenant's emails once sent",
        )

        # Blocked: the due email is failed with the reason, and never sent (not after unblocking either).
        blocked, due = _schedule(c, "pause.test", 1)
        _set_status(stack, tenant.id, "blocked")
        assert c.get(f"/v1/emails/{blocked[0]}").json()["error"] == "tenant_blocked"
        while datetime.now(UTC) < due + timedelta(seconds=6):
            time.sleep(0.5)
        _set_status(stack, tenant.id, "active")

        def failed() -> dict[str, Any] | None:
            got = email_status(c, blocked[0])
            return got if got["status"] == "failed" else None

        got = wait_for(failed, 30, what="blocked email failed")
        assert "tenant_blocked" in json.dumps(got)
        time.sleep(2.0)
        assert blocked[0] not in sent_email_ids(stack)
