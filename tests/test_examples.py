"""examples/subscriber.py, the durable-consumer example of docs/event-stream.md, run as a user would
against the real stack: it sees an email's delivered event stored before the consumer existed
(`--since`: the shared stack's whole history is long) and acks it, so the next run of the same
durable sees only what came after."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from mailroom_devstack.stack import Stack
from support import Tenant, create_tenant, email_status, wait_for

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "subscriber.py"


def subscriber(stack: Stack, durable: str, *extra: str) -> list[str]:
    """One run of the example until it is idle; the email ids of the events it printed."""
    assert stack.nats is not None
    out = subprocess.run(
        [
            *(sys.executable, str(EXAMPLE), "--nats", stack.nats.url, "--durable", durable),
            *("--subject", "mailroom.email.delivered", "--idle-exit", "1.5", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert all(e["type"] == "email.delivered" for e in events)
    return [e["email_id"] for e in events]


def delivered_email(stack: Stack, tenant: Tenant) -> str:
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers("test"), timeout=10) as client:
        sent = client.post(
            "/v1/emails",
            json={"from": "a@example.test", "to": "success@simulator.amazonses.com", "subject": "s", "text": "t"},
        )
        assert sent.status_code == 202, sent.text
        email_id = str(sent.json()["id"])
        wait_for(lambda: email_status(client, email_id)["status"] == "delivered", what="delivered")
    return email_id


def test_the_subscriber_example_reads_and_acks_delivered_events(stack: Stack) -> None:
    tenant = create_tenant(stack)
    durable = f"example-{secrets.token_hex(4)}"
    since = datetime.now(UTC)
    first = delivered_email(stack, tenant)
    history = subscriber(stack, durable, "--since", since.isoformat())  # stored before the consumer existed
    assert history.count(first) == 1
    second = delivered_email(stack, tenant)
    later = subscriber(stack, durable, "--since", since.isoformat(), "--delete")
    assert second in later and first not in later  # acked: never delivered to this durable again
