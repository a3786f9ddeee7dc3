"""What an operator watches, scraped from each service's /metrics on the real stack after a live
email went through: requests by route template, events published by subject (accepted, sent,
delivered), SES call latency, outbox backlog and consumer lag gauges; no id or address as a label."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from mailroom_devstack.stack import SERVICES, Stack
from support import Tenant, create_tenant, email_status, verified_domain, wait_for

SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>(?:[^"}]|"[^"]*")*)\})? (?P<value>\S+)$', re.M)


def scrape(stack: Stack, service: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{stack.url(service)}/metrics", timeout=10).text
    out = []
    for m in SAMPLE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        out.append((m.group("name"), labels, float(m.group("value"))))
    return out


def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == want for k, want in labels.items()))


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Tenant:
    tenant = create_tenant(stack)
    verified_domain(stack, tenant, "metrics.test")
    return tenant


def test_an_operator_sees_the_email_in_every_services_metrics(stack: Stack, tenant: Tenant) -> None:
    with httpx.Client(base_url=stack.url("api"), headers=tenant.headers("live"), timeout=10) as client:
        sent = client.post(
            "/v1/emails",
            json={"from": "a@metrics.test", "to": "success@simulator.amazonses.com", "subject": "s", "text": "t"},
        )
        assert sent.status_code == 202, sent.text
        email_id = sent.json()["id"]
        wait_for(lambda: email_status(client, email_id)["status"] == "delivered", what="delivered")
        assert client.get(f"/v1/emails/{email_id}").status_code == 200

    api = scrape(stack, "api")
    assert total(api, "mailroom_http_requests_total", route="/v1/emails", method="POST", status="202") >= 1
    assert total(api, "mailroom_http_requests_total", route="/v1/emails/{email_id}", method="GET") >= 1
    assert total(api, "mailroom_outbox_published_total", subject="mailroom.email.queued") >= 1
    sender = scrape(stack, "sender")
    assert total(sender, "mailroom_ses_send_seconds_count", outcome="accepted") >= 1
    assert total(sender, "mailroom_outbox_published_total", subject="mailroom.email.sent") >= 1
    events = scrape(stack, "events")
    assert total(events, "mailroom_outbox_published_total", subject="mailroom.email.delivered") >= 1

    # the gauges: every service reports its backlog; consumers report their lag, caught up by now
    for service in SERVICES:
        samples = scrape(stack, service)
        assert any(n == "mailroom_outbox_backlog" and ls == {"schema": service} for n, ls, _ in samples), service
    assert any(n == "mailroom_consumer_pending" and ls == {"consumer": "sender-queued"} for n, ls, _ in sender)
    # every service froze its startup heap out of the garbage collector's reach (mailroom_kit.heap)
    for service in SERVICES:
        assert total(scrape(stack, service), "mailroom_gc_frozen_objects") > 10_000, service
    assert any(n == "mailroom_consumer_redelivered" for n, _, _ in sender)
    # the webhook delivery backlog, by state (read at start and every metrics interval)
    wait_for(
        lambda: (
            {ls.get("state") for n, ls, _ in scrape(stack, "webhooks") if n == "mailroom_webhook_deliveries"}
            == {"due", "waiting", "in_flight", "paused"}
        ),
        what="the webhook backlog gauges",
    )
    assert any(n == "mailroom_webhook_oldest_due_seconds" for n, _, _ in scrape(stack, "webhooks"))

    # bounded labels: no email id, tenant id or address anywhere
    for service in SERVICES:
        for _, labels, _ in scrape(stack, service):
            values = " ".join(labels.values())
            assert email_id not in values and tenant.id not in values and "@" not in values, (service, labels)


def test_the_grafana_dashboard_uses_only_metrics_the_services_expose(stack: Stack) -> None:
    dashboard = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "mailroom.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for e in exprs for name in re.findall(r"mailroom_[a-z_]+", e)}
    exposed = set()
    for service in SERVICES:
        text = httpx.get(f"{stack.url(service)}/metrics", timeout=10).text
        exposed |= {re.sub(r"_total$", "", n) for n in re.findall(r"^# HELP (mailroom_[a-z_]+)", text, re.M)}
    missing = {u for u in used if re.sub(r"_total$", "", u) not in exposed}
    assert not missing, missing
    assert len(used) >= 10
