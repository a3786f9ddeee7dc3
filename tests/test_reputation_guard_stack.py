"""The reputation guard (issue 22) through the whole stack (devstack: real api, sender, events, SES
emulator, NATS, Postgres): the SES mailbox simulator's `bounce@` recipients produce real signed SNS
bounces; a window of them pauses the tenant once its hard-bounce rate is over 5 % (not at 1 of 21,
4.8 %; at 2 of 22, 9.1 %), the operator API shows why and the figures, the tenant's send is 403
tenant_paused saying why, and after the operator resumes it the tenant sends again (the window
starts at the resume, so the old bounces do not pause it again). The tenant's own minimum of sends
(20) keeps it to a few emails."""

from __future__ import annotations

from typing import Any

import httpx
from mailroom_devstack.stack import Stack
from support import create_tenant, email_status, verified_domain, wait_for

SIM = "simulator.amazonses.com"


def _admin(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.operator_token}"}


def test_simulator_bounces_pause_the_tenant_past_the_threshold_and_a_resume_sends_again(stack: Stack) -> None:
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "guard.test")
    api = stack.url("api")
    with (
        httpx.Client(base_url=api, headers=tenant.headers(), timeout=10) as c,
        httpx.Client(base_url=api, headers=_admin(stack), timeout=10) as admin,
    ):
        r = admin.patch(f"/admin/v1/tenants/{tenant.id}", json={"reputation_min_sends": 20})
        assert r.status_code == 200 and r.json()["reputation_min_sends"] == 20, r.text

        def send(to: list[str]) -> str:
            r = c.post("/v1/emails", json={"from": "hi@guard.test", "to": to, "subject": "s", "text": "x"})
            assert r.status_code == 202, r.text
            email_id: str = r.json()["id"]
            return email_id

        def settled(email_id: str, status: str) -> dict[str, Any] | None:
            got = email_status(c, email_id)
            done = got["status"] == status and all(r["status"] == status for r in got["recipients"])
            return got if done else None

        def tenant_view() -> dict[str, Any]:
            r = admin.get(f"/admin/v1/tenants/{tenant.id}")
            assert r.status_code == 200, r.text
            view: dict[str, Any] = r.json()
            return view

        good = send([f"success+{i}@{SIM}" for i in range(20)])  # 20 sends, delivered
        wait_for(lambda: settled(good, "delivered"), 60, what="20 deliveries")
        first = send([f"bounce+1@{SIM}"])
        wait_for(lambda: settled(first, "bounced"), 60, what="the first bounce recorded")
        view = tenant_view()
        r = view["reputation"]
        assert view["status"] == "active", view  # 1 of 21: 4.8 %, not over 5 %
        assert (r["sends"], r["hard_bounces"], r["min_sends"], r["warn"], r["over_threshold"]) == (
            21,
            1,
            20,
            True,
            False,
        )

        second = send([f"bounce+2@{SIM}"])
        paused = wait_for(lambda: (v := tenant_view())["status"] == "paused" and v, 60, what="the tenant paused")
        assert settled(second, "bounced") is not None
        reason = paused["status_reason"]
        assert "hard-bounce rate 9.091% (2 of 22 live sends) is over 5%" in reason, reason
        assert paused["paused_at"] is not None
        r = paused["reputation"]
        assert (r["sends"], r["hard_bounces"], r["complaints"], r["over_threshold"]) == (22, 2, 0, True)
        assert abs(r["bounce_rate"] - 2 / 22) < 1e-9 and r["complaint_rate"] == 0.0
        listed = admin.get("/admin/v1/tenants").json()["data"]
        assert next(t for t in listed if t["id"] == tenant.id)["status_reason"] == reason

        refused = c.post(
            "/v1/emails", json={"from": "hi@guard.test", "to": f"success@{SIM}", "subject": "s", "text": "x"}
        )
        assert (refused.status_code, refused.json()["error"]) == (403, "tenant_paused"), refused.text
        assert reason in refused.json()["message"]

        resumed = admin.patch(f"/admin/v1/tenants/{tenant.id}", json={"status": "active"})
        assert resumed.status_code == 200 and resumed.json()["reputation"]["sends"] == 0, resumed.text
        again = send([f"success+again@{SIM}"])  # the resume is effective at once (its NOTIFY, on commit)
        wait_for(lambda: settled(again, "delivered"), 60, what="the send after the resume delivered")
        view = tenant_view()
        assert view["status"] == "active" and view["reputation"]["sends"] == 1, view
