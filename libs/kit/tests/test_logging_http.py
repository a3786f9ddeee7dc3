"""The kit's observability: stdlib logging through structlog (every line JSON in JSON mode), the
one `http.request` summary line per HTTP request (including Litestar's own 404/405) with its
`x-request-id` header and metrics, and the one `rpc.handled` line per RPC request."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from mailroom_contracts.rpc import GetWebhookRequest, RpcError, WebhookReply
from mailroom_kit import rpc
from mailroom_kit.http import add_log_fields, request_id, request_logging
from mailroom_kit.logging import get_logger
from prometheus_client import REGISTRY

SCRIPT = Path(__file__).parent / "json_logging_app.py"


def run_json_app(level: str, database_url: str, nats_url: str) -> list[dict[str, Any]]:
    """Every stderr line of json_logging_app.py, each parsed as JSON (a non-JSON line fails)."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), level, database_url, nats_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    if level != "debug":  # at debug, httpx (the script's own client) logs the URLs it fetches
        assert "secret-value" not in done.stderr and "mr_live_secret" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        for key in ("event", "level", "service", "timestamp"):
            assert key in entry, f"{key} missing from {line}"
        assert entry["service"] == "jsontest"
        parsed.append(entry)
    return parsed


def events(lines: list[dict[str, Any]]) -> list[str]:
    return [str(line["event"]) for line in lines]


def test_json_mode_writes_only_json_including_stdlib_records(database_url: str, nats_url: str) -> None:
    lines = run_json_app("info", database_url, nats_url)
    by_event = {line["event"]: line for line in lines}
    # stdlib records (uvicorn's own, nats, asyncio, warnings) through the same renderer
    assert by_event["Invalid HTTP request received."]["logger"] == "uvicorn.error"
    assert by_event["uvicorn warning line"]["level"] == "warning"
    assert by_event["nats error line"] == {**by_event["nats error line"], "level": "error", "logger": "nats.aio.client"}
    assert "ZeroDivisionError" in by_event["asyncio exception line"]["exception"]
    assert any(line.get("logger") == "py.warnings" and "a python warning" in line["event"] for line in lines)
    # chatty third-party INFO/DEBUG stays out unless the level is debug
    assert "uvicorn info line" not in by_event and "botocore debug line" not in by_event
    assert not any("Started server process" in e for e in events(lines))
    # one summary line per request, none for probes; the route's own line shares its request id
    requests = [line for line in lines if line["event"] == "http.request"]
    assert [(r["path"], r["status"]) for r in requests] == [("/things/t1", 200), ("/nope", 404)]
    assert requests[0]["tenant_id"] == "ten_json" and requests[0]["method"] == "GET"
    assert by_event["thing.read"]["request_id"] == requests[0]["request_id"]


def test_debug_level_lets_third_party_info_and_debug_through(database_url: str, nats_url: str) -> None:
    found = events(run_json_app("debug", database_url, nats_url))
    assert "uvicorn info line" in found and "botocore debug line" in found
    assert found.count("http.request") == 2


# --------------------------------------------------------------------------- http.request


@pytest.fixture
def captured() -> Iterator[list[MutableMapping[str, Any]]]:
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as entries:
        yield entries


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


log = get_logger("kit.test")


@get("/things/{thing_id:str}", sync_to_thread=False)
def read_thing(request: Request[Any, Any, Any], thing_id: FromPath[str]) -> dict[str, str]:
    add_log_fields(request.scope, tenant_id="ten_1")
    structlog.contextvars.bind_contextvars(thing_id=thing_id)  # bound by the edge; ends with the request
    log.info("thing.read")
    return {"id": thing_id, "request_id": request_id(request.scope)}


@get("/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("kaput")


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@pytest.fixture
async def client() -> Any:
    logging = request_logging("kittest")
    app = Litestar(
        [read_thing, boom, health],
        middleware=logging.middleware,
        before_send=logging.before_send,
        logging_config=None,
    )
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def summaries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] == "http.request"]


async def test_one_summary_line_per_request_with_fields_and_header(client: Any, captured: list[dict[str, Any]]) -> None:
    route = {"service": "kittest", "route": "/things/{thing_id}"}
    before = sample("mailroom_http_requests_total", **route, method="GET", status="200")
    timed = sample("mailroom_http_request_seconds_count", **route, status="200")
    r = await client.get("/things/t1?token=secret-value", headers={"Authorization": "Bearer mr_live_secret"})
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    assert rid.startswith("req_") and r.json()["request_id"] == rid
    [line] = summaries(captured)
    assert line["method"] == "GET" and line["path"] == "/things/t1" and line["status"] == 200
    assert line["request_id"] == rid and line["tenant_id"] == "ten_1" and line["thing_id"] == "t1"
    assert line["log_level"] == "info" and isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    [own] = [e for e in captured if e["event"] == "thing.read"]
    assert own["request_id"] == rid
    assert "secret-value" not in repr(captured) and "mr_live_secret" not in repr(captured)
    # labelled by the route's template, never by the path (ids, tokens)
    assert sample("mailroom_http_requests_total", **route, method="GET", status="200") == before + 1
    assert sample("mailroom_http_request_seconds_count", **route, status="200") == timed + 1
    assert (
        sample("mailroom_http_requests_total", service="kittest", route="/things/t1", method="GET", status="200") == 0
    )


async def test_litestar_404_and_405_get_header_and_exactly_one_line(
    client: Any, captured: list[dict[str, Any]]
) -> None:
    unmatched = {"service": "kittest", "route": "unmatched", "method": "GET", "status": "404"}
    before = sample("mailroom_http_requests_total", **unmatched)
    missing = await client.get("/no/such/route")
    wrong = await client.delete("/things/t1")
    assert (missing.status_code, wrong.status_code) == (404, 405)
    lines = summaries(captured)
    assert [(line["path"], line["status"], line["method"]) for line in lines] == [
        ("/no/such/route", 404, "GET"),
        ("/things/t1", 405, "DELETE"),
    ]
    assert [line["request_id"] for line in lines] == [missing.headers["x-request-id"], wrong.headers["x-request-id"]]
    assert all(line["request_id"].startswith("req_") for line in lines)
    assert sample("mailroom_http_requests_total", **unmatched) == before + 1


async def test_unhandled_error_is_one_500_line(client: Any, captured: list[dict[str, Any]]) -> None:
    r = await client.get("/boom")
    assert r.status_code == 500 and r.headers["x-request-id"].startswith("req_")
    [line] = summaries(captured)
    assert (line["path"], line["status"]) == ("/boom", 500)


async def test_quiet_paths_get_the_header_but_no_line(client: Any, captured: list[dict[str, Any]]) -> None:
    before = sample("mailroom_http_requests_total", service="kittest", method="GET", status="200")
    r = await client.get("/health")
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")
    assert summaries(captured) == []
    assert sample("mailroom_http_requests_total", service="kittest", method="GET", status="200") == before


async def test_context_bound_during_a_request_ends_with_it(client: Any, captured: list[dict[str, Any]]) -> None:
    await client.get("/things/t1")
    await client.get("/no/such/route")
    first, second = summaries(captured)
    assert first["thing_id"] == "t1" and first["tenant_id"] == "ten_1"
    assert "thing_id" not in second and "tenant_id" not in second
    assert first["request_id"] != second["request_id"]
    assert "thing_id" not in structlog.contextvars.get_contextvars()


async def test_an_existing_request_id_header_is_not_doubled(captured: list[dict[str, Any]]) -> None:
    @post("/echo", sync_to_thread=False)
    def echo(request: Request[Any, Any, Any]) -> Response[dict[str, bool]]:
        return Response({"ok": True}, headers={"X-Request-Id": request_id(request.scope)})

    logging = request_logging("kittest", quiet_paths=())
    app = Litestar([echo], middleware=logging.middleware, before_send=logging.before_send, logging_config=None)
    async with AsyncTestClient(app=app) as client:
        r = await client.post("/echo")
    assert r.headers.get_list("x-request-id") == [summaries(captured)[0]["request_id"]]


# --------------------------------------------------------------------------- rpc.handled


async def test_rpc_logs_one_line_per_request_with_outcome(nats_url: str, captured: list[dict[str, Any]]) -> None:
    nc = await nats.connect(nats_url)
    subject = f"rpc.test.{secrets.token_hex(3)}"

    async def handler(req: GetWebhookRequest) -> WebhookReply:
        if req.webhook_id == "missing":
            return WebhookReply(error=RpcError(code="not_found", message="no such webhook"))
        if req.webhook_id == "bug":
            raise RuntimeError("kaput")
        structlog.contextvars.bind_contextvars(webhook_id=req.webhook_id)
        return WebhookReply()

    sub = await rpc.serve(nc, subject, GetWebhookRequest, handler, queue="q")
    for webhook_id in ("wh_1", "missing", "bug"):
        await rpc.request(nc, subject, GetWebhookRequest(tenant_id="ten_r", webhook_id=webhook_id), WebhookReply)
    bad = await nc.request(subject, b"[]", timeout=2)
    assert msgspec.json.decode(bad.data)["error"]["code"] == "validation_error"
    for _ in range(100):  # the summary line follows the reply
        if sum(e["event"] == "rpc.handled" for e in captured) == 4:
            break
        await asyncio.sleep(0.01)
    lines = [e for e in captured if e["event"] == "rpc.handled"]
    assert [line["outcome"] for line in lines] == ["ok", "not_found", "internal", "bad_request"]
    assert all(line["subject"] == subject and line["duration_ms"] >= 0 for line in lines)
    assert [line.get("tenant_id") for line in lines] == ["ten_r", "ten_r", "ten_r", None]
    assert lines[0]["webhook_id"] == "wh_1" and "webhook_id" not in lines[1]
    assert [line["log_level"] for line in lines] == ["info", "info", "error", "warning"]
    # the error is described, never dumped: no traceback (its text would carry data), the class and place
    assert "exc_info" not in lines[2] and "exception" not in lines[2]
    assert lines[2]["error_class"] == "builtins.RuntimeError" and lines[2]["error"] == "kaput"
    assert lines[2]["error_at"].startswith("test_logging_http.py:")
    for outcome in ("ok", "not_found", "internal", "bad_request"):
        assert sample("mailroom_rpc_requests_total", subject=subject, outcome=outcome) == 1
    assert sample("mailroom_rpc_request_seconds_count", subject=subject) == 4
    assert len(captured) == 4  # nothing else was logged for these requests
    await sub.unsubscribe()
    await nc.close()


def test_a_database_error_is_described_without_its_text() -> None:
    """Postgres echoes the offending value in its message and DETAIL; only class, place and SQLSTATE
    may reach a log line or a dead letter."""
    import psycopg
    from mailroom_kit.redact import describe_error, error_text

    marker = "tenant-secret-metadata-7731"
    try:
        raise psycopg.errors.UniqueViolation(f'duplicate key value violates unique constraint "x" DETAIL: ({marker})')
    except psycopg.Error as exc:
        described = describe_error(exc)
        text = error_text(exc)
    assert described["error_class"] == "psycopg.errors.UniqueViolation" and "sqlstate" in described
    assert marker not in str(described) and marker not in text
    try:
        raise ValueError(f"bad value '{marker}' in field\nsecond line {marker}")
    except ValueError as exc:
        other = describe_error(exc)
    assert other["error"] == "bad value '…' in field" and marker not in str(other)
