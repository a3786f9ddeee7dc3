"""Scheduled emails through the whole stack (devstack: api, sender, events, webhooks, domains,
the SES emulator, NATS, Postgres): an email scheduled a few seconds ahead still reaches SES on
time after the api (which hosts the outbox relay) and the sender were killed with -9 and
restarted and NATS was restarted in between; one canceled meanwhile never goes out; the tenant's
webhook endpoint gets `email.scheduled`, `email.canceled` and, at its time, `email.queued`.

On time: the SES emulator's own receive timestamp is at most `TOLERANCE` after `scheduled_at`.
The relay publishes within milliseconds of the due moment (libs/kit tests: < 1 s with margin);
from there the sender's pull consumer, the message build and the SES call take tens of
milliseconds on an idle machine. This 2-core box runs other suites at the same time, so the test
allows 1 s plus 1 s of scheduling noise, and never earlier than due."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import Stack
from support import WebhookReceiver, create_tenant, emulator_sent, make_stack, verified_domain, wait_for

TOLERANCE = 2.0


@pytest.fixture(scope="module")
def sched_stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    # Its own stack: this test restarts services and NATS under it.
    yield from make_stack(tmp_path_factory.mktemp("scheduled"), postgres)


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sent_at(stack: Stack, email_id: str) -> list[datetime]:
    return [
        datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))
        for m in emulator_sent(stack)
        if m["tags"].get("mailroom_email_id") == email_id
    ]


def test_a_scheduled_email_goes_out_on_time_across_restarts_of_api_sender_and_nats(sched_stack: Stack) -> None:
    stack = sched_stack
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "later.test")
    body = {"from": "Later <hi@later.test>", "to": "success@simulator.amazonses.com", "subject": "at nine", "text": "x"}
    with (
        WebhookReceiver() as receiver,
        httpx.Client(base_url=stack.url("api"), headers=tenant.headers(), timeout=10) as c,
    ):
        r = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["*"]})
        assert r.status_code == 201, r.text
        # Long enough for three restarts on a busy machine, short enough for a fast suite.
        when = datetime.now(UTC) + timedelta(seconds=12)
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        accepted = [c.post("/v1/emails", json={**body, "scheduled_at": rfc3339(when)}) for _ in range(2)]
        assert [a.status_code for a in accepted] == [202, 202], [a.text for a in accepted]
        assert {a.json()["status"] for a in accepted} == {"scheduled"}
        kept, canceled = (a.json()["id"] for a in accepted)

        started = time.monotonic()
        stack.kill("api")  # the relay with it: nothing in memory holds the schedule
        stack.restart("api")
        stack.kill("sender")
        stack.restart("sender")
        assert stack.nats is not None
        stack.nats.stop()
        time.sleep(0.5)
        stack.nats.start()
        stack.wait_ready(["api", "sender", "webhooks"])
        took = time.monotonic() - started
        assert datetime.now(UTC) < when - timedelta(seconds=1), f"restarts took {took:.1f} s: past the schedule"

        r = c.post(f"/v1/emails/{canceled}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "canceled", r.text
        assert c.get(f"/v1/emails/{kept}").json()["status"] == "scheduled"
        assert not sent_at(stack, kept)

        [at] = wait_for(lambda: sent_at(stack, kept), timeout=30, interval=0.1, what="the scheduled send")
        late = (at - when).total_seconds()
        assert 0 <= late <= TOLERANCE, f"sent {late:.3f} s after its time"

        wait_for(lambda: c.get(f"/v1/emails/{kept}").json()["status"] == "delivered", what="delivered")
        events = [e["type"] for e in c.get(f"/v1/emails/{kept}").json()["events"]]
        assert events[:2] == ["scheduled", "queued"] and "delivered" in events
        assert c.get(f"/v1/emails/{canceled}").json()["status"] == "canceled"
        assert not sent_at(stack, canceled)

        def hooks() -> bool:
            return bool(
                receiver.of_type("email.scheduled", kept)
                and receiver.of_type("email.scheduled", canceled)
                and receiver.of_type("email.canceled", canceled)
                and receiver.of_type("email.queued", kept)
            )

        wait_for(hooks, timeout=30, what="email.scheduled, email.canceled and email.queued webhooks")
        [scheduled_hook] = receiver.of_type("email.scheduled", kept)
        data = scheduled_hook.json["data"]
        assert data["scheduled_at"] == rfc3339(when) and data["subject"] == "at nine"
        assert data["to"] == ["success@simulator.amazonses.com"]
        [canceled_hook] = receiver.of_type("email.canceled", canceled)
        assert canceled_hook.json["data"]["from"] == "Later <hi@later.test>"  # the summary was recorded
        assert not receiver.of_type("email.queued", canceled)
