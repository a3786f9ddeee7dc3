"""Tracing across the outbox and NATS, against real Postgres and a real nats-server: the context
current when an outbox row is written travels in the row and then in the message's headers, and
the consumer's span is its child; the HTTP, RPC and batch paths continue it too; with tracing off
the row holds NULL and the message carries no trace header. Spans are read from the SDK's
in-memory exporter."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from mailroom_contracts.events import Event
from mailroom_contracts.streams import ConsumerSpec
from mailroom_kit import outbox, rpc, tracing
from mailroom_kit.consumer import BatchItem, handle_batch, handle_message
from mailroom_kit.db import Pool, open_pool
from mailroom_kit.http import request_logging
from mailroom_kit.jetstream import reconcile
from mailroom_kit.migrations import migrate
from mailroom_kit.settings import SettingsError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

sys.path.insert(0, str(Path(__file__).parent))

from kit_testkit import Space, sent

HERE = Path(__file__).parent / "fixture_migrations"


class Traced:
    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.tracer = provider.get_tracer("test")
        self.exporter = exporter

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    yield Traced(provider, exporter)
    tracing.shutdown()


@pytest.fixture
def untraced() -> Iterator[None]:
    tracing.shutdown()
    yield
    tracing.shutdown()


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[tuple[Pool, str]]:
    schema = f"trace_{secrets.token_hex(3)}"
    await migrate(database_url, schema, HERE)
    pool = await open_pool(database_url, schema)
    yield pool, schema
    await pool.close()


def traceparent(span: ReadableSpan | trace.Span) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def write(pool: Pool, schema: str, event: Event) -> str | None:
    """`outbox.add` in a transaction; the row's stored trace context."""
    async with pool.connection() as conn, conn.transaction():
        await outbox.add(conn, event, schema=schema)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT trace_context FROM outbox WHERE event_id = %s", (event.event_id,))
        row = await cur.fetchone()
    assert row is not None
    return row["trace_context"]  # type: ignore[no-any-return]


async def relay_and_fetch(
    pool: Pool, schema: str, database_url: str, js: JetStreamContext, space: Space, spec: ConsumerSpec, n: int = 1
) -> list[Msg]:
    """Relay every outbox row into the space's stream (its contract subject rewritten to the
    space's), then fetch `n` messages from `spec`."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE outbox SET subject = %s", (f"{space.prefix}.email.sent",))
    relay = outbox.OutboxRelay(pool, js, url=database_url, schema=schema)
    assert await relay.relay_once() == n
    psub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    msgs = await psub.fetch(batch=n, timeout=5)
    assert len(msgs) == n
    return msgs


async def test_the_relay_carries_the_writers_context_and_the_consumer_parents_on_it(
    traced: Traced, db: tuple[Pool, str], js: JetStreamContext, database_url: str
) -> None:
    pool, schema = db
    async with Space(js) as space:
        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        first, second = sent(1), sent(2)
        with traced.tracer.start_as_current_span("POST /v1/emails") as request:
            stored = await write(pool, schema, first)
        assert stored is not None and msgspec.json.decode(stored) == {"traceparent": traceparent(request)}

        [msg] = await relay_and_fetch(pool, schema, database_url, js, space, spec)
        assert msg.headers == {"Nats-Msg-Id": first.event_id, "traceparent": traceparent(request)}

        inside: list[str] = []

        async def handler(event: Event, _msg: Msg) -> None:
            inside.append(traceparent(trace.get_current_span()))
            inside.append(await write(pool, schema, second) or "")  # the next hop's row

        assert await handle_message(spec, handler, msg, js=js) == "ack"
        [span] = traced.spans(f"process {spec.durable}")
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert span.context is not None and span.context.trace_id == request.get_span_context().trace_id
        assert span.attributes is not None and span.attributes["mailroom.outcome"] == "ack"
        assert span.attributes["messaging.message.id"] == first.event_id
        # The handler ran inside the consumer's span, and the row it wrote carries that span.
        assert inside == [traceparent(span), msgspec.json.encode({"traceparent": traceparent(span)}).decode()]
        # Remembered for work done later in this process (the webhooks dispatcher).
        remembered = tracing.recall(first.event_id)
        assert remembered is not None
        assert trace.get_current_span(remembered).get_span_context().span_id == span.context.span_id
        with tracing.client_span("webhook POST", parent_event_id=first.event_id) as post:
            assert post is not None
        [posted] = traced.spans("webhook POST")
        assert posted.parent is not None and posted.parent.span_id == span.context.span_id


async def test_each_message_of_a_batch_parents_on_its_own_context(
    traced: Traced, db: tuple[Pool, str], js: JetStreamContext, database_url: str
) -> None:
    pool, schema = db
    async with Space(js) as space:
        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        events = [sent(1), sent(2)]
        parents = {}
        for event in events:
            with traced.tracer.start_as_current_span(f"request {event.event_id}") as request:
                await write(pool, schema, event)
            parents[event.event_id] = request.get_span_context()
        msgs = await relay_and_fetch(pool, schema, database_url, js, space, spec, n=2)

        async def handler(items: list[BatchItem]) -> None:
            assert all(item.span is not None for item in items)

        assert await handle_batch(spec, handler, msgs, js=js) == ["ack", "ack"]
        spans = traced.spans(f"process {spec.durable}")
        assert len(spans) == 2
        for span in spans:
            assert span.attributes is not None
            parent = parents[str(span.attributes["messaging.message.id"])]
            assert span.parent is not None and span.parent.span_id == parent.span_id
            assert span.context is not None and span.context.trace_id == parent.trace_id


async def test_tracing_off_writes_null_and_adds_no_header(
    untraced: None, db: tuple[Pool, str], js: JetStreamContext, database_url: str
) -> None:
    pool, schema = db
    # Even with a span current (some other library's provider), the kit adds nothing when off.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with Space(js) as space:
        spec = space.consumer("email.>")
        await reconcile(js, [], [spec])
        event = sent(1)
        with provider.get_tracer("other").start_as_current_span("elsewhere"):
            assert tracing.context_text() is None
            assert await write(pool, schema, event) is None
        [msg] = await relay_and_fetch(pool, schema, database_url, js, space, spec)
        assert msg.headers == {"Nats-Msg-Id": event.event_id}

        async def handler(_event: Event, _msg: Msg) -> None:
            assert not trace.get_current_span().get_span_context().is_valid

        assert await handle_message(spec, handler, msg, js=js) == "ack"
        assert tracing.recall(event.event_id) is None
        headers: dict[str, str] = {}
        tracing.inject(headers)
        assert headers == {}


async def test_a_bad_stored_context_never_stops_the_relay() -> None:
    assert tracing.headers_of(None) == {}
    assert tracing.headers_of("not json") == {}
    assert tracing.headers_of('["a"]') == {}
    assert tracing.headers_of('{"traceparent": "00-x", "Nats-Msg-Id": "forged", "tracestate": 1}') == {
        "traceparent": "00-x"
    }


async def test_an_rpc_responder_continues_the_requesters_trace(traced: Traced, nats_url: str) -> None:
    class Ping(msgspec.Struct, frozen=True, kw_only=True):
        n: int

    subject = f"tracetest.rpc.{secrets.token_hex(3)}"
    seen: list[str] = []

    async def pong(req: Ping) -> Ping:
        seen.append(traceparent(trace.get_current_span()))
        return Ping(n=req.n + 1)

    nc = await nats.connect(nats_url)
    try:
        await rpc.serve(nc, subject, Ping, pong, queue="test")
        with traced.tracer.start_as_current_span("caller") as caller:
            assert await rpc.request(nc, subject, Ping(n=1), Ping, timeout=5) == Ping(n=2)
    finally:
        await nc.close()
    [served] = traced.spans(f"process {subject}")
    assert served.kind is SpanKind.SERVER
    assert served.parent is not None and served.parent.span_id == caller.get_span_context().span_id
    assert seen == [traceparent(served)]


async def test_an_http_request_is_a_server_span_named_by_its_route_template(traced: Traced) -> None:
    @get("/things/{thing_id:str}", sync_to_thread=False)
    def thing(thing_id: FromPath[str]) -> dict[str, str]:
        return {"id": thing_id, "traceparent": traceparent(trace.get_current_span())}

    @get("/health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    logging = request_logging("test")
    app = Litestar([thing, health], middleware=logging.middleware, before_send=logging.before_send, logging_config=None)
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with AsyncTestClient(app) as client:
        r = await client.get("/things/abc", headers={"traceparent": incoming})
        assert (await client.get("/health")).status_code == 200
    assert r.status_code == 200
    [span] = traced.spans()  # the probe is not traced
    assert span.name == "GET /things/{thing_id}"
    assert span.kind is SpanKind.SERVER
    assert span.context is not None and f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 200
    assert r.json()["traceparent"] == traceparent(span)


def test_configuration_from_the_standard_variables(tmp_path: Path, untraced: None) -> None:
    assert tracing.configure("api", {}) is False  # off by default, unlike the SDK's own default
    assert tracing.configure("api", {"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.configure("api", {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}) is False
    assert not tracing.enabled()
    for bad, variable in (
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "jsonl"}, "MAILROOM_TRACES_FILE"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ):
        with pytest.raises(SettingsError, match=variable):
            tracing.check(bad)
        with pytest.raises(SettingsError, match=variable):
            tracing.configure("api", bad)
        assert not tracing.enabled()
    assert tracing.configure("api", {"OTEL_TRACES_EXPORTER": "otlp"}) is True  # the exporter only connects on export
    tracing.shutdown()
    path = tmp_path / "spans.jsonl"
    assert tracing.configure("sender", {"OTEL_TRACES_EXPORTER": "jsonl", "MAILROOM_TRACES_FILE": str(path)}) is True
    with tracing.client_span("SES SendEmail", **{"rpc.method": "SendEmail"}):
        pass
    with pytest.raises(ValueError), tracing.client_span("webhook POST"):
        raise ValueError("to: ada@example.com")  # the text never reaches the span
    tracing.shutdown()
    lines = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    assert [(s["name"], s["kind"], s["service"], s["status"]) for s in lines] == [
        ("SES SendEmail", "CLIENT", "mailroom-sender", "UNSET"),
        ("webhook POST", "CLIENT", "mailroom-sender", "ERROR"),
    ]
    assert lines[0]["attributes"] == {"rpc.method": "SendEmail"}
    assert lines[1]["attributes"] == {"error.type": "ValueError"}
    assert "ada@example.com" not in path.read_text()
