"""OpenTelemetry tracing across HTTP, the outbox and NATS: one trace from an API request through
every hop to the SES call and the webhook POST. OFF unless `OTEL_TRACES_EXPORTER` names an exporter.

Switched on by the standard variables, read once at service start (`configure`, from
`runtime.serve`): `OTEL_TRACES_EXPORTER` (`otlp` — OTLP over HTTP/protobuf, configured by
`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_HEADERS`,
… which the exporter reads itself —, `console`, `jsonl`, or `none`), `OTEL_SERVICE_NAME` (default
`mailroom-<service>`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` / `_ARG` (the SDK's
sampler; default `parentbased_always_on`), `OTEL_SDK_DISABLED`. Unlike the SDK's own default
(`otlp`), an unset `OTEL_TRACES_EXPORTER` means no tracing: a self-hosted install should not start
sending spans to localhost:4318 because nobody set a variable. `jsonl` appends one JSON object per
finished span to the file `MAILROOM_TRACES_FILE` (for debugging without a collector, and for the
cross-process test, which reads the real services' spans from it).

The context crosses process boundaries as W3C trace context (`traceparent`, `tracestate`):
  * HTTP: `http_span` (the kit's request middleware) continues an incoming `traceparent` and
    names the SERVER span after the route template (`POST /v1/emails`).
  * Outbox: `context_text()` is the active context as text; the writer stores it in the row's
    `trace_context` column (kit migration 0004) in the same statement as the row, and the relay
    adds it to the message's headers (`outbox.py`). So the span that was current when the row was
    written — not the relay's poll — is the parent of the consumer's span in the next service.
  * NATS: `start_message_span` (the consumer loop) continues the message's context in a CONSUMER span
    per message handled, current while the handler runs; `inject` adds the current context to
    the kit's direct publishes (dead letters, replays, RPC requests).
  * Deliveries done later from a table (the webhooks dispatcher) parent on the context stored in
    the row when it was written (`client_span(parent_context=…)`, webhooks migration 0004), so a
    retry hours later or by another replica stays in the trace; failing that on `recall(event_id)`:
    each message span is remembered under its event id in a bounded in-process map.

With tracing off every helper is one `is None` check: no allocation, no header, NULL in the
outbox column.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from threading import Lock
from typing import Any

import msgspec
from nats.aio.msg import Msg
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
    SpanProcessor,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mailroom_kit.settings import SettingsError

EXPORTERS = frozenset({"otlp", "console", "jsonl", "none"})
TRACES_FILE_ENV = "MAILROOM_TRACES_FILE"
# Message contexts remembered for `recall` (a webhook delivery usually follows its event within
# seconds; a bounded map keeps memory flat whatever the backlog).
REMEMBERED = 10_000

# W3C trace context only (no baggage): the headers every tracing system reads.
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_remembered: OrderedDict[str, otel_context.Context] = OrderedDict()
_remembered_lock = Lock()


class JsonLinesExporter(SpanExporter):
    """Appends each finished span as one JSON line (trace and span ids in hex, the parent's span
    id, name, kind, service, attributes, status) to a file; several processes may share it
    (each line is one O_APPEND write)."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            lines.append(
                msgspec.json.encode(
                    {
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "name": span.name,
                        "kind": span.kind.name,
                        "service": span.resource.attributes.get(SERVICE_NAME),
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                    }
                )
                + b"\n"
            )
        if lines:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, b"".join(lines))
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise SettingsError(
            f"invalid configuration OTEL_TRACES_EXPORTER: {unknown[0]!r} is not one of {sorted(EXPORTERS)}"
        )
    return [n for n in names if n != "none"]


def _processor(name: str, env: Mapping[str, str]) -> SpanProcessor:
    if name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    if name == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    path = env.get(TRACES_FILE_ENV, "").strip()
    # Synchronous: the file gets each span as it ends (nothing lost when the process is killed).
    return SimpleSpanProcessor(JsonLinesExporter(path))


def check(environ: Mapping[str, str] | None = None) -> None:
    """Raise SettingsError for a bad OTEL_TRACES_EXPORTER / protocol / file setting (at start)."""
    env = os.environ if environ is None else environ
    for name in _exporter_names(env):
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            if protocol not in (None, "", "http/protobuf"):
                raise SettingsError(
                    f"invalid configuration OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} (Mailroom exports http/protobuf)"
                )
        elif name == "jsonl" and not env.get(TRACES_FILE_ENV, "").strip():
            raise SettingsError(f"invalid configuration {TRACES_FILE_ENV}: required with OTEL_TRACES_EXPORTER=jsonl")


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Set tracing up for `service` from the OTEL_* variables (see the module docstring); True when
    on. A bad value raises SettingsError (the process stops at start, naming the variable)."""
    global _tracer, _provider
    env = os.environ if environ is None else environ
    check(env)
    names = _exporter_names(env)
    processors = [_processor(name, env) for name in names]
    shutdown()
    if not processors:
        return False
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"mailroom-{service}"}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for processor in processors:
        provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("mailroom_kit")
    return True


def use_provider(provider: TracerProvider) -> None:
    """Trace into `provider` (tests: one with an in-memory exporter)."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("mailroom_kit")


def shutdown() -> None:
    """Flush and stop (service stop); tracing is off afterwards."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    with _remembered_lock:
        _remembered.clear()
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


# ----------------------------------------------------------------------------- propagation


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current context's `traceparent`/`tracestate` to `headers` (tracing on only)."""
    if _tracer is not None:
        _PROPAGATOR.inject(headers)


def context_text() -> str | None:
    """The current context as text for an outbox row's `trace_context` (JSON of the W3C headers);
    None when tracing is off or no span is active."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return msgspec.json.encode(carrier).decode() if carrier else None


def headers_of(text: str | None) -> dict[str, str]:
    """The message headers an outbox row's `trace_context` stands for ({} for NULL or garbage:
    a bad stored value must never stop the relay)."""
    if not text:
        return {}
    try:
        carrier = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {}
    if not isinstance(carrier, dict):
        return {}
    return {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate") and isinstance(v, str)}


def _extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    return _PROPAGATOR.extract(headers or {})


# ----------------------------------------------------------------------------- spans


@contextlib.contextmanager
def http_span(method: str, route: str, headers: Iterable[tuple[bytes, bytes]]) -> Iterator[Span | None]:
    """A SERVER span `"{method} {route}"` (the route template) continuing an incoming traceparent."""
    if _tracer is None:
        yield None
        return
    carrier = {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in headers
        if k.lower() in (b"traceparent", b"tracestate")
    }
    attributes = {"http.request.method": method, "http.route": route}
    with _tracer.start_as_current_span(
        f"{method} {route}",
        context=_extract(carrier),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
    ) as span:
        yield span


@contextlib.contextmanager
def rpc_span(subject: str, headers: Mapping[str, str] | None) -> Iterator[None]:
    """A SERVER span for one NATS request answered (`process <subject>`), child of the requester's."""
    if _tracer is None:
        yield
        return
    attributes = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": subject,
    }
    with _tracer.start_as_current_span(
        f"process {subject}",
        context=_extract(headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        record_exception=False,
    ):
        yield


def set_http_status(status: int) -> None:
    """Record the response status on the current (HTTP) span; 5xx marks it failed."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))


def start_message_span(durable: str, msg: Msg) -> Span | None:
    """A CONSUMER span for one message, child of the context its headers carry (not made current:
    see `use`); None when tracing is off. The caller ends it (`end_message_span`)."""
    if _tracer is None:
        return None
    subject, headers = msg.subject, msg.headers
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": subject,
        "messaging.consumer.group.name": durable,
    }
    msg_id = (headers or {}).get("Nats-Msg-Id")
    if msg_id:
        attributes["messaging.message.id"] = msg_id
    return _tracer.start_span(
        f"process {durable}", context=_extract(headers), kind=SpanKind.CONSUMER, attributes=attributes
    )


def end_message_span(span: Span | None, outcome: str, event_id: str | None = None) -> None:
    """Record the consumer's outcome (ack, retry, dead_lettered, …), remember the span under the
    event id for `recall`, and end it."""
    if span is None:
        return
    span.set_attribute("mailroom.outcome", outcome)
    if outcome not in ("ack", "ignored"):
        span.set_status(Status(StatusCode.ERROR, outcome))
    if event_id:
        remember(event_id, trace.set_span_in_context(span))
    span.end()


@contextlib.contextmanager
def use(span: Span | None) -> Iterator[None]:
    """Make `span` current (its outbox rows and calls become its children); nothing for None."""
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False):
        yield


@contextlib.contextmanager
def client_span(
    name: str, *, parent_context: str | None = None, parent_event_id: str | None = None, **attributes: Any
) -> Iterator[Span | None]:
    """A CLIENT span around an outgoing call (the SES call, a webhook POST), child of the current
    span; or of `parent_context`, a stored `context_text()` (a row written earlier, perhaps by
    another process); or else of the remembered span of `parent_event_id` when known. An
    exception escaping it is recorded and marks it failed."""
    if _tracer is None:
        yield None
        return
    stored = headers_of(parent_context)
    parent = _extract(stored) if stored else None
    if parent is None and parent_event_id is not None:
        parent = recall(parent_event_id)
    # No exception events: an error's text may echo data (an address in an SES message); its
    # class is enough to find the logs.
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CLIENT,
        attributes={k: v for k, v in attributes.items() if v is not None},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            annotate(span, error=type(exc).__name__)
            raise


def annotate(span: Span | None, *, error: str | None = None, **attributes: Any) -> None:
    """Add the outcome of a call to its span: attributes (None values skipped) and, given
    `error` (a short class such as `timeout` or `http_500`, never data), a failed status."""
    if span is None:
        return
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(Status(StatusCode.ERROR, error))


def remember(event_id: str, ctx: otel_context.Context) -> None:
    with _remembered_lock:
        _remembered[event_id] = ctx
        _remembered.move_to_end(event_id)
        while len(_remembered) > REMEMBERED:
            _remembered.popitem(last=False)


def recall(event_id: str) -> otel_context.Context | None:
    """The context of the span that handled `event_id` in this process, if still remembered."""
    with _remembered_lock:
        return _remembered.get(event_id)
