"""Opens and clicks through the whole stack: a tracked live send, an Open and a Click fired at the
SES emulator (signed SNS, like SES) → the events service → the email log (timeline entries and
counters, never a status), signed `email.opened` / `email.clicked` webhooks, and `GET /v1/stats`."""

from __future__ import annotations

import httpx
import psycopg
from mailroom_devstack.stack import Stack
from standardwebhooks.webhooks import Webhook
from support import WebhookReceiver, create_tenant, email_status, emulator_sent, verified_domain, wait_for


def test_open_and_click_fired_at_the_emulator_reach_timeline_counters_and_webhooks(stack: Stack) -> None:
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "engage.test")
    emulator = stack.url("emulator")
    with (
        WebhookReceiver() as receiver,
        httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c,
    ):
        wh = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.opened", "email.clicked"]})
        assert wh.status_code == 201, wh.text
        r = c.post(
            "/v1/emails",
            json={
                "from": "Shop <shop@engage.test>",
                "to": "success@simulator.amazonses.com",
                "subject": "Your order",
                "html": '<p><a href="https://engage.test/orders/1">order</a></p>',
                "track_opens": True,
                "track_clicks": True,
            },
        )
        assert r.status_code == 202, r.text
        email_id = r.json()["id"]
        wait_for(lambda: email_status(c, email_id)["status"] == "delivered", what="delivered")
        fresh = email_status(c, email_id)
        assert (fresh["opens"], fresh["clicks"]) == (0, 0)
        [ses_id] = [m["message_id"] for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") == email_id]

        for ua in ("Phone/1", "Desktop/2"):  # two opens: two SES events, both counted
            fired = httpx.post(
                f"{emulator}/_emulator/sent/{ses_id}/open", json={"ip_address": "198.51.100.1", "user_agent": ua}
            )
            assert fired.status_code == 200 and fired.json()["sns_message_ids"], fired.text
        fired = httpx.post(
            f"{emulator}/_emulator/sent/{ses_id}/click",
            json={"link": "https://engage.test/orders/1", "ip_address": "198.51.100.2", "user_agent": "Desktop/2"},
        )
        assert fired.status_code == 200 and fired.json()["sns_message_ids"], fired.text

        def engaged() -> dict | None:
            got = email_status(c, email_id)
            return got if (got["opens"], got["clicks"]) == (2, 1) else None

        email = wait_for(engaged, what="opens 2, clicks 1")
        assert email["status"] == "delivered"  # opens and clicks are not statuses
        assert [e["type"] for e in email["events"]] == ["queued", "sent", "delivered", "opened", "opened", "clicked"]
        clicked = email["events"][-1]
        assert clicked["data"]["link"] == "https://engage.test/orders/1" and clicked["data"]["ip"] == "198.51.100.2"
        listed = c.get("/v1/emails", params={"limit": 10}).json()["data"]
        assert [(e["opens"], e["clicks"]) for e in listed if e["id"] == email_id] == [(2, 1)]

        wait_for(lambda: len(receiver.of_type("email.opened", email_id)) == 2, what="two opened webhooks")
        wait_for(lambda: receiver.of_type("email.clicked", email_id), what="clicked webhook")
        hook = Webhook(wh.json()["secret"])
        opened = [hook.verify(r.body, r.headers) for r in receiver.of_type("email.opened", email_id)]
        assert sorted(p["data"]["open"]["user_agent"] for p in opened) == ["Desktop/2", "Phone/1"]
        [click] = [hook.verify(r.body, r.headers) for r in receiver.of_type("email.clicked", email_id)]
        assert click["data"]["click"] == {
            "link": "https://engage.test/orders/1",
            "ip": "198.51.100.2",
            "user_agent": "Desktop/2",
        }
        assert click["data"]["subject"] == "Your order" and click["data"]["mode"] == "live"

        # and in stats (the tenant's, live): two opens of one email, one click
        def counted() -> dict | None:
            totals = c.get("/v1/stats").json()["totals"]
            return totals if totals["clicked"] == 1 else None

        totals = wait_for(counted, what="the click in stats")
        assert (totals["sent"], totals["delivered"]) == (1, 1), totals
        assert (totals["opened"], totals["opened_unique"], totals["clicked"], totals["clicked_unique"]) == (2, 1, 1, 1)
        by_domain = c.get("/v1/stats", params={"domain": "engage.test"}).json()["totals"]
        assert (by_domain["opened"], by_domain["clicked"]) == (2, 1), by_domain
        assert c.get("/v1/stats", params={"domain": "other.test"}).json()["totals"]["opened"] == 0


def test_ses_subscription_fired_at_the_emulator_suppresses_the_recipient(stack: Stack) -> None:
    """An SES Subscription opt-out (the configuration sets match SUBSCRIPTION) → `unsubscribed` in
    the timeline and one `unsubscribe` suppression of that recipient, with the email as source
    (the suppression list API is another helper's: the row is read from the api schema)."""
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "leave.test")
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c:
        r = c.post(
            "/v1/emails",
            json={
                "from": "news@leave.test",
                "to": ["success@simulator.amazonses.com", "Success+Other@simulator.amazonses.com"],
                "subject": "News",
                "text": "t",
            },
        )
        assert r.status_code == 202, r.text
        email_id = r.json()["id"]
        wait_for(lambda: email_status(c, email_id)["status"] == "delivered", what="delivered")
        [ses_id] = [m["message_id"] for m in emulator_sent(stack) if m["tags"].get("mailroom_email_id") == email_id]
        fired = httpx.post(
            stack.url("emulator") + f"/_emulator/sent/{ses_id}/unsubscribe",
            json={"recipient": "Success+Other@simulator.amazonses.com"},
        )
        assert fired.status_code == 200 and fired.json()["sns_message_ids"], fired.text

        def with_unsubscribed() -> dict | None:
            got = email_status(c, email_id)
            return got if "unsubscribed" in [x["type"] for x in got["events"]] else None

        email = wait_for(with_unsubscribed, what="unsubscribed entry")
        assert email["status"] == "delivered"
        entry = next(x for x in email["events"] if x["type"] == "unsubscribed")
        assert entry["data"]["recipients"] == ["Success+Other@simulator.amazonses.com"]
        assert entry["data"]["unsubscribe_all"] is True
    with psycopg.connect(stack.db_url) as conn:
        rows = conn.execute(
            "SELECT mode, email, reason, source_email_id FROM api.suppressions WHERE tenant_id = %s", (tenant.id,)
        ).fetchall()
    assert rows == [("live", "success+other@simulator.amazonses.com", "unsubscribe", email_id)]
