"""One trace across processes (issue 20): the whole stack with every service exporting its spans to
one JSON-lines file (`OTEL_TRACES_EXPORTER=jsonl`, `MAILROOM_TRACES_FILE`), then one email sent with
a `traceparent` of our own. Every span of that trace is read back from the real processes' output:
`POST /v1/emails` in the api, through the api's outbox and relay and NATS to `process sender-queued`
and `SES SendEmail` in the sender, through the sender's outbox to the lifecycle consumers
(`process api-email-log`, `process webhooks-email`) and to the `webhook POST` of the first,
immediate delivery of `email.queued` and `email.sent`; every span's parent chain ends at ours. And a
delivery retried by a restarted webhooks process (issue 19) still posts inside the email's trace."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailroom_devstack.infra import Postgres
from mailroom_devstack.stack import SERVICES, Stack
from support import WebhookReceiver, create_tenant, make_stack, verified_domain, wait_for

Span = dict[str, Any]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[tuple[Stack, Path]]:
    base = tmp_path_factory.mktemp("traced")
    traces = base / "traces.jsonl"
    env = {"OTEL_TRACES_EXPORTER": "jsonl", "MAILROOM_TRACES_FILE": str(traces)}
    for stack in make_stack(base / "stack", postgres, **{svc: env for svc in SERVICES}):
        yield stack, traces


def spans_of(traces: Path, trace_id: str) -> list[Span]:
    if not traces.exists():
        return []
    spans = [json.loads(line) for line in traces.read_text().splitlines() if line.strip()]
    return [s for s in spans if s["trace_id"] == trace_id]


def named(spans: list[Span], name: str, service: str) -> list[Span]:
    return [s for s in spans if s["name"] == name and s["service"] == service]


def ancestry(span: Span, by_id: dict[str, Span]) -> list[str]:
    """Span ids from `span` up to the first parent that is not in the trace (ours, from the caller)."""
    chain = [span["span_id"]]
    while span["parent_span_id"] in by_id:
        span = by_id[span["parent_span_id"]]
        chain.append(span["span_id"])
    chain.append(span["parent_span_id"])
    return chain


def test_one_trace_from_the_api_request_to_the_ses_call_and_the_webhook_posts(traced: tuple[Stack, Path]) -> None:
    stack, traces = traced
    tenant = create_tenant(stack, "Traced")
    name = f"mail.tr{secrets.token_hex(4)}.example.com"
    verified_domain(stack, tenant, name, timeout=30)
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with WebhookReceiver() as receiver, httpx.Client(base_url=stack.url("api"), headers=tenant.headers()) as c:
        hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.queued", "email.sent"]})
        assert hook.status_code == 201, hook.text
        r = c.post(
            "/v1/emails",
            json={"from": f"hi@{name}", "to": "success@simulator.amazonses.com", "subject": "traced", "text": "t"},
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert r.status_code == 202, r.text
        email_id = r.json()["id"]
        wait_for(lambda: receiver.of_type("email.sent", email_id), 60, what="the email.sent webhook")
        wait_for(lambda: receiver.of_type("email.queued", email_id), 30, what="the email.queued webhook")

    def complete() -> list[Span] | None:
        spans = spans_of(traces, trace_id)
        posts = named(spans, "webhook POST", "mailroom-webhooks")
        return spans if len(posts) >= 2 and named(spans, "process api-email-log", "mailroom-api") else None

    spans = wait_for(complete, 30, what="every span of the trace in the file")
    by_id = {s["span_id"]: s for s in spans}

    [request] = named(spans, "POST /v1/emails", "mailroom-api")
    assert request["kind"] == "SERVER" and request["parent_span_id"] == caller_span
    assert request["attributes"]["http.route"] == "/v1/emails"
    assert request["attributes"]["http.response.status_code"] == 202

    [consumed] = named(spans, "process sender-queued", "mailroom-sender")
    assert consumed["kind"] == "CONSUMER" and consumed["parent_span_id"] == request["span_id"], (
        "the api's outbox row carried the request's context through the relay and NATS"
    )
    assert consumed["attributes"]["mailroom.outcome"] == "ack"
    [ses] = named(spans, "SES SendEmail", "mailroom-sender")
    assert ses["kind"] == "CLIENT" and ses["status"] != "ERROR"
    assert consumed["span_id"] in ancestry(ses, by_id)

    # The lifecycle events the sender wrote to its outbox continue the same trace in the api's
    # email log and in the webhooks service, up to each first delivery.
    assert named(spans, "process api-email-log", "mailroom-api")
    fan_outs = named(spans, "process webhooks-email", "mailroom-webhooks")
    assert len(fan_outs) >= 2, "email.queued and email.sent"
    posts = named(spans, "webhook POST", "mailroom-webhooks")
    for post in posts:
        assert post["kind"] == "CLIENT" and post["status"] != "ERROR"
        assert post["attributes"].get("http.response.status_code") == 200
        chain = ancestry(post, by_id)
        assert {s["span_id"] for s in fan_outs} & set(chain), "parented on its event's consumer span"
        assert request["span_id"] in chain
    sent_post = next(p for p in posts if consumed["span_id"] in ancestry(p, by_id))
    assert sent_post, "the email.sent delivery descends from the sender's work"

    # One trace, one root: every span descends from the caller's span, none starts a trace of its own.
    for span in spans:
        assert ancestry(span, by_id)[-1] == caller_span, span["name"]
    assert {s["service"] for s in spans} >= {"mailroom-api", "mailroom-sender", "mailroom-webhooks"}


def test_a_retry_by_a_restarted_webhooks_service_continues_the_emails_trace(traced: tuple[Stack, Path]) -> None:
    """Issue 19/20: the first attempt of a delivery fails; the webhooks service is stopped before its
    retry is due (SPEC's first delay, 5 s) and started again. The fresh process remembers nothing of
    the event: its `webhook POST` is parented by the `trace_context` stored with the delivery, so it
    is in the email's trace, under the same fan-out span as the first attempt."""
    stack, traces = traced
    tenant = create_tenant(stack, "Traced retry")
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with (
        WebhookReceiver(status=500) as receiver,
        httpx.Client(base_url=stack.url("api"), headers=tenant.headers("test"), timeout=10) as c,
    ):
        hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["email.sent"]})
        assert hook.status_code == 201, hook.text
        wid = hook.json()["id"]
        r = c.post(
            "/v1/emails",
            json={"from": "hi@traced.example.test", "to": "a@example.com", "subject": "retried", "text": "t"},
            headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        )
        assert r.status_code == 202, r.text
        email_id = r.json()["id"]
        wait_for(lambda: receiver.of_type("email.sent", email_id), 60, what="the first attempt")
        receiver.status = 200
        stack.stop_process("webhooks")  # SIGTERM: the failed attempt is recorded, its retry pending
        stopped = datetime.now(UTC)
        stack.restart("webhooks")
        wait_for(lambda: len(receiver.of_type("email.sent", email_id)) == 2 or None, 60, what="the retry")
        first, second = receiver.of_type("email.sent", email_id)
        assert first.headers["webhook-id"] == second.headers["webhook-id"]

        [delivery] = c.get(f"/v1/webhooks/{wid}/deliveries").json()["data"]

        def recorded() -> list[dict[str, Any]] | None:
            got = c.get(f"/v1/webhooks/{wid}/deliveries/{delivery['id']}").json()
            return got["attempts"] if got["status"] == "succeeded" else None

        attempts = wait_for(recorded, what="both attempts recorded")
        assert [(a["attempt"], a["status_code"]) for a in attempts] == [(1, 500), (2, 200)]
        assert datetime.fromisoformat(attempts[1]["started_at"]) > stopped, "the retry is the new process's"

    def both_posts() -> list[Span] | None:
        posts = named(spans_of(traces, trace_id), "webhook POST", "mailroom-webhooks")
        return posts if len(posts) == 2 else None

    posts = wait_for(both_posts, 30, what="both webhook POST spans in the email's trace")
    by_status = {p["attributes"].get("http.response.status_code"): p for p in posts}
    assert set(by_status) == {500, 200}
    failed, retried = by_status[500], by_status[200]
    assert failed["status"] == "ERROR" and retried["status"] != "ERROR"
    assert retried["parent_span_id"] == failed["parent_span_id"], "the same fan-out span, from the stored context"
    spans = spans_of(traces, trace_id)
    by_id = {s["span_id"]: s for s in spans}
    parent = by_id[retried["parent_span_id"]]
    assert (parent["name"], parent["service"]) == ("process webhooks-email", "mailroom-webhooks")
    assert ancestry(retried, by_id)[-1] == caller_span
