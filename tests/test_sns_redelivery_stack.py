"""Duplicate and out-of-order SNS deliveries through the whole stack: the emulator redelivers
signed notifications byte for byte (as SNS retries), after later events of the same email, and
each email still ends in one correct state with its opens counted once, and counted once in stats."""

from __future__ import annotations

import httpx
from mailroom_devstack.stack import Stack
from support import create_tenant, email_status, emulator_sent, verified_domain, wait_for

SIM = "simulator.amazonses.com"


def notifications(stack: Stack, ses_id: str, event_type: str) -> list[str]:
    notes = httpx.get(
        stack.url("emulator") + "/_emulator/notifications",
        params={"ses_message_id": ses_id, "event_type": event_type},
    ).json()["notifications"]
    return [n["sns_message_id"] for n in notes]


def redeliver(stack: Stack, sns_message_id: str, times: int = 1) -> None:
    for _ in range(times):
        r = httpx.post(stack.url("emulator") + f"/_emulator/notifications/{sns_message_id}/redeliver")
        assert r.status_code == 200, r.text


def settled(stack: Stack) -> bool:
    return bool(httpx.get(stack.url("emulator") + "/_emulator/notifications").json()["pending_jobs"] == 0)


def test_redelivered_and_late_notifications_leave_one_final_state(stack: Stack) -> None:
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "replay.test")
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:

        def send(to: list[str], **extra: object) -> str:
            r = c.post(
                "/v1/emails", json={"from": "a@replay.test", "to": to, "subject": "s", "html": "<p>x</p>", **extra}
            )
            assert r.status_code == 202, r.text
            return str(r.json()["id"])

        def ses_id(email_id: str) -> str:
            return next(m["message_id"] for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") == email_id)

        # 1. Delivery after Bounce: one recipient delivered, one bounced; the Delivery comes again last.
        mixed = send([f"success@{SIM}", f"bounce@{SIM}"])
        wait_for(lambda: len(email_status(c, mixed)["events"]) == 4, what="sent, delivered, bounced")
        # 2. Complaint before Delivery: the Complaint is delivered three more times, then the Delivery again.
        complained = send([f"complaint@{SIM}"])
        wait_for(lambda: email_status(c, complained)["status"] == "complained", what="complained")
        # 3. The same Open notification three times: one open.
        opened = send([f"success@{SIM}"], track_opens=True)
        wait_for(lambda: email_status(c, opened)["status"] == "delivered", what="delivered")
        fired = httpx.post(stack.url("emulator") + f"/_emulator/sent/{ses_id(opened)}/open")
        assert fired.status_code == 200 and fired.json()["sns_message_ids"], fired.text
        wait_for(lambda: email_status(c, opened)["opens"] == 1, what="one open")

        [mixed_delivery] = notifications(stack, ses_id(mixed), "Delivery")
        redeliver(stack, mixed_delivery, 3)
        [complaint] = notifications(stack, ses_id(complained), "Complaint")
        redeliver(stack, complaint, 3)
        [complained_delivery] = notifications(stack, ses_id(complained), "Delivery")
        redeliver(stack, complained_delivery)
        [the_open] = notifications(stack, ses_id(opened), "Open")
        redeliver(stack, the_open, 3)
        wait_for(lambda: settled(stack), what="the emulator delivered everything")
        # The events service answers each duplicate at once; give the projector a moment to (not) apply them.
        wait_for(
            lambda: all(n == "delivered" for n in _states(stack, [mixed_delivery, complaint, the_open])),
            what="all delivered",
        )

        m = email_status(c, mixed)
        assert m["status"] == "bounced"
        assert {r["email"]: r["status"] for r in m["recipients"]} == {
            f"success@{SIM}": "delivered",
            f"bounce@{SIM}": "bounced",
        }
        assert sorted(e["type"] for e in m["events"]) == ["bounced", "delivered", "queued", "sent"]
        bounced = next(e for e in m["events"] if e["type"] == "bounced")
        assert [r["status"] for r in bounced["data"]["bounced_recipients"]] == ["5.1.1"]

        cm = email_status(c, complained)
        assert cm["status"] == "complained"
        assert [e["type"] for e in cm["events"]] == ["queued", "sent", "delivered", "complained"]

        o = email_status(c, opened)
        assert (o["status"], o["opens"], o["clicks"]) == ("delivered", 1, 0)
        assert [e["type"] for e in o["events"]].count("opened") == 1

        # Stats (GET /v1/stats, the projector's rollups) counted each once: 4 recipients sent, the
        # redelivered Delivery, Complaint and Open notifications added nothing.
        totals = c.get("/v1/stats", params={"granularity": "hour"}).json()["totals"]
        counted = {k: totals[k] for k in ("sent", "delivered", "bounced_hard", "bounced_soft", "complained")}
        assert counted == {"sent": 4, "delivered": 3, "bounced_hard": 1, "bounced_soft": 0, "complained": 1}, totals
        assert (totals["opened"], totals["opened_unique"], totals["clicked"]) == (1, 1, 0), totals
        assert (totals["bounce_rate"], totals["complaint_rate"]) == (0.25, 0.25), totals


def _states(stack: Stack, sns_ids: list[str]) -> list[str]:
    notes = httpx.get(stack.url("emulator") + "/_emulator/notifications").json()["notifications"]
    return [n["state"] for n in notes if n["sns_message_id"] in sns_ids]
