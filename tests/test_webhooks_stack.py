"""Webhooks in full through the whole stack (issue 19): the API's routes answered by the real
webhooks service over NATS request/reply, deliveries to a real local receiver: PATCH, test event,
the delivery log, retry with the same webhook-id, secret rotation with both signatures, bad input."""

from __future__ import annotations

import httpx
import pytest
from mailroom_devstack.stack import Stack
from standardwebhooks.webhooks import Webhook
from support import Tenant, WebhookReceiver, create_tenant, wait_for


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    return create_tenant(stack, "Webhooks in full")


def test_manage_test_log_retry_and_rotate_through_the_api(stack: Stack, tenant: Tenant) -> None:
    with WebhookReceiver() as receiver, httpx.Client(base_url=stack.url("api"), headers=tenant.headers()) as c:
        created = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.sent"]})
        assert created.status_code == 201, created.text
        wh = created.json()
        old_secret, wid = wh["secret"], wh["id"]
        assert wh["disabled_reason"] is None and wh["notices"] == []

        # PATCH: only the given fields; the URL re-validated; nothing changes on a refusal.
        r = c.patch(f"/v1/webhooks/{wid}", json={"events": ["email.delivered", "email.bounced"], "description": "d"})
        assert r.status_code == 200, r.text
        assert (r.json()["events"], r.json()["description"], r.json()["url"]) == (
            ["email.delivered", "email.bounced"],
            "d",
            receiver.url,
        )
        for body, param in (
            ({"url": "https://169.254.169.254/x"}, "url"),
            ({"url": "not a url"}, "url"),
            ({"events": ["email.nope"]}, "events[0]"),
            ({"events": []}, "events"),
            ({"enabled": "yes"}, "enabled"),
            ({"secret": "whsec_x"}, "secret"),
        ):
            bad = c.patch(f"/v1/webhooks/{wid}", json=body)
            assert bad.status_code == 422 and bad.json()["param"] == param, (body, bad.text)
        assert c.get(f"/v1/webhooks/{wid}").json()["events"] == ["email.delivered", "email.bounced"]
        off = c.patch(f"/v1/webhooks/{wid}", json={"enabled": False}).json()
        assert (off["enabled"], off["disabled_reason"]) == (False, "manual")
        refused = c.post(f"/v1/webhooks/{wid}/test")
        assert refused.status_code == 409 and refused.json()["error"] == "conflict"
        on = c.patch(f"/v1/webhooks/{wid}", json={"enabled": True, "description": None}).json()
        assert (on["enabled"], on["disabled_reason"], on["description"]) == (True, None, None)

        # A test event, whatever the filter: 202 with its delivery, then signed at the receiver.
        sent = c.post(f"/v1/webhooks/{wid}/test")
        assert sent.status_code == 202, sent.text
        delivery = sent.json()
        assert delivery["id"].startswith("whd_") and delivery["event_type"] == "webhook.test"
        first = wait_for(lambda: receiver.of_type("webhook.test") or None, what="webhook.test")[0]
        assert Webhook(old_secret).verify(first.body, first.headers)["id"] == delivery["event_id"]

        def settled() -> dict | None:
            got = c.get(f"/v1/webhooks/{wid}/deliveries/{delivery['id']}").json()
            return got if got["status"] == "succeeded" else None

        got = wait_for(settled, what="test delivery succeeded")
        [attempt] = got["attempts"]
        assert attempt["attempt"] == 1 and attempt["status_code"] == 200 and attempt["error"] is None
        assert attempt["latency_ms"] >= 0 and attempt["next_retry_at"] is None and attempt["manual"] is False
        listed = c.get(f"/v1/webhooks/{wid}/deliveries", params={"event_type": "webhook.test", "limit": 1}).json()
        assert [d["id"] for d in listed["data"]] == [delivery["id"]] and listed["next_cursor"] is None
        assert "attempts" not in listed["data"][0]
        assert c.get(f"/v1/webhooks/{wid}/deliveries", params={"status": "failed"}).json()["data"] == []

        # Retry now: a new, manual attempt with the same webhook-id.
        retried = c.post(f"/v1/webhooks/{wid}/deliveries/{delivery['id']}/retry")
        assert retried.status_code == 202, retried.text
        wait_for(lambda: len(receiver.of_type("webhook.test")) == 2 or None, what="retried")
        again = receiver.of_type("webhook.test")[1]
        assert again.headers["webhook-id"] == first.headers["webhook-id"] and again.body == first.body
        wait_for(
            lambda: (
                [a["manual"] for a in c.get(f"/v1/webhooks/{wid}/deliveries/{delivery['id']}").json()["attempts"]]
                == [False, True]
                or None
            ),
            what="manual attempt recorded",
        )

        # Rotation: the new secret once; both signatures during the overlap.
        rotated = c.post(f"/v1/webhooks/{wid}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        new_secret = rotated.json()["secret"]
        assert new_secret != old_secret and rotated.json()["previous_secret_expires_at"] is not None
        assert "secret" not in c.get(f"/v1/webhooks/{wid}").json()
        assert c.post(f"/v1/webhooks/{wid}/test").status_code == 202
        third = wait_for(lambda: receiver.of_type("webhook.test")[2:] or None, what="third test")[0]
        for secret in (old_secret, new_secret):
            assert Webhook(secret).verify(third.body, third.headers)["type"] == "webhook.test"

        # Bad input: 422 naming the parameter, 404 for ids that cannot be ours.
        for params, param in (
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"cursor": "whd_nope"}, "cursor"),
            ({"status": "lost"}, "status"),
            ({"event_type": "tenant.updated"}, "event_type"),
        ):
            bad = c.get(f"/v1/webhooks/{wid}/deliveries", params=params)
            assert bad.status_code == 422 and bad.json()["param"] == param, (params, bad.text)
        for path in (
            f"/v1/webhooks/{wid}/deliveries/whd_nope",
            f"/v1/webhooks/{wid}/deliveries/whd_{'0' * 26}",
            f"/v1/webhooks/wh_{'0' * 26}/deliveries",
        ):
            assert c.get(path).status_code == 404
        assert c.post(f"/v1/webhooks/{wid}/deliveries/whd_{'0' * 26}/retry").status_code == 404
