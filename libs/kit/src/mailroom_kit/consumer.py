"""Durable pull consumer loop with explicit, classified acks, bounded retries and dead letters.

A handler returns normally → ack. It raises `Retry` (or any unexpected exception) → nak with
backoff growing with the delivery count (transient), until the consumer's `max_deliveries`:
a message still failing on that delivery is dead-lettered. It raises `Permanent` (the data can
never be handled) → dead-lettered at once. Dead-lettering publishes the message to
`mailroom.dlq.<durable>` and terminates it only once JetStream stored the dead letter; if that
publish fails the message is nak'd and comes back, so nothing is ever dropped silently.

Payloads that do not decode as a known event: on a wildcard consumer (`mailroom.domain.>`) an
event whose `type` tag this version does not know (a newer replica published it) is acked and
ignored; anything else (no tag, bad data, or an unknown type on an exact-subject consumer) is
dead-lettered.

Each message gets one summary log line, `message.handled` (consumer, subject, event_type,
outcome, duration_ms, delivery, the event's ids); handlers add their own fields to it with
`note(...)` instead of logging a line of their own. Long handlers keep the message alive with
in-progress heartbeats. `consume` returns as soon as `stop` is set (an idle fetch is abandoned).

Batch mode (`consume_batches`): the batch handler gets every decodable message of one fetch as
`BatchItem`s and applies them all in ONE transaction (multi-row statements; the inbox claim for
all event ids at once). When it returns, its transaction has committed: each item is then acked,
or settled as the handler marked it (`item.retry(...)` / `item.permanent(...)`, for items it left
untouched, e.g. claimed nothing for). Only after the commit are messages acked, so a crash between
commit and ack redelivers them, and the handler's inbox claim makes the redelivery a no-op. If the
batch handler raises, nothing of the batch was committed; the kit then hands each message to the
same handler alone (a batch of one), classified exactly as `consume` classifies a handler's
exceptions, so one poison message is retried / dead-lettered on its own while the rest apply;
except when the batch failed because Postgres was unreachable (pool timeout, connection lost,
server shutting down): no message is to blame, so all are nak'd with backoff at once.
Undecodable, unknown-type and over-delivered messages are settled before the batch, as in
`consume`. Each message still gets its own `message.handled` line (with `batch`, the size of the
batch it was applied in; `duration_ms` is the batch's); batch handlers add fields with
`item.note(...)` (the contextvar `note()` has no single message to go to inside a batch).

Both at once (`consume(..., bulk=Bulk(...))`, issue 23): a per-message consumer whose fetches ask
for up to `Bulk.fetch` messages; `Bulk.take(msgs, free)` picks the ones a batch handler applies
together (in one transaction, `handle_batch`'s rules), e.g. a backlog only queued, not processed;
the rest go to the per-message handler as usual, up to `concurrency` at once. So a backlog in the
stream is read at database speed while a lone message still gets the per-message path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import structlog
from mailroom_contracts import decode_event, peek_type
from mailroom_contracts.dead_letters import DeadLetterReason
from mailroom_contracts.events import Event
from mailroom_contracts.registry import KNOWN_EVENT_TAGS
from mailroom_contracts.streams import ConsumerSpec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from opentelemetry.trace import Span
from psycopg import OperationalError
from psycopg_pool import PoolTimeout

from mailroom_kit import dlq, tracing
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import DEAD_LETTERS, MESSAGE_SECONDS, MESSAGES_HANDLED
from mailroom_kit.redact import describe_error, error_text
from mailroom_kit.wake import Stopped, sleep_until_stopped, until_stopped

log = get_logger(__name__)

Handler = Callable[[Event, Msg], Awaitable[None]]
BatchHandler = Callable[[list["BatchItem"]], Awaitable[None]]
# Server shutting down / starting up: like a lost connection, no message's fault.
_DB_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})
BACKOFF_SECONDS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300)
Level = Literal["info", "warning", "error"]
_LEVELS: dict[str, int] = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class Retry(Exception):
    """Transient: try again later (after `delay` seconds, or the backoff schedule)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Permanent(Exception):
    """Will never succeed (bad data): the message is dead-lettered and terminated."""


def backoff(num_delivered: int) -> float:
    return BACKOFF_SECONDS[min(max(num_delivered, 1), len(BACKOFF_SECONDS)) - 1]


class _Summary:
    """The fields of the message being handled's summary line (one per task, via a contextvar)."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.level = logging.INFO

    def raise_level(self, level: Level) -> None:
        self.level = max(self.level, _LEVELS[level])


_SUMMARY: ContextVar[_Summary | None] = ContextVar("mailroom_consumer_summary", default=None)


def note(level: Level | None = None, **fields: Any) -> None:
    """Add `fields` to the summary line of the message being handled (`message.handled`); `level`
    raises that line's level (never lowers it). Fields named like the kit's own (outcome, subject,
    …) are ignored. Outside a message handler this does nothing."""
    summary = _SUMMARY.get()
    if summary is None:
        return
    summary.fields.update({k: v for k, v in fields.items() if v is not None})
    if level is not None:
        summary.raise_level(level)


def is_wildcard(spec: ConsumerSpec) -> bool:
    return any("*" in s.split(".") or ">" in s.split(".") for s in spec.filter_subjects)


async def _heartbeat(msg: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def _give_up(
    js: JetStreamContext | None,
    spec: ConsumerSpec,
    msg: Msg,
    summary: _Summary,
    *,
    reason: DeadLetterReason,
    error: str,
    event_type: str | None,
) -> str:
    """Dead-letter then term; if the dead letter cannot be stored, nak so it comes back."""
    summary.raise_level("error")
    summary.fields["dead_letter_reason"] = reason
    summary.fields["error"] = error
    try:
        if js is None:
            raise RuntimeError("no JetStream context to publish the dead letter with")
        letter = dlq.dead_letter_for(spec, msg, reason=reason, error=error, event_type=event_type)
        await dlq.publish(js, letter)
    except Exception as exc:
        delay = backoff(msg.metadata.num_delivered)
        summary.fields.update(dead_letter_error=repr(exc), delay=delay)
        await msg.nak(delay=delay)
        return "dead_letter_failed"
    await msg.term()
    DEAD_LETTERS.labels(consumer=spec.durable).inc()
    return "dead_lettered"


async def _settle(
    js: JetStreamContext | None, spec: ConsumerSpec, msg: Msg, summary: _Summary, event_type: str, exc: Exception | None
) -> str:
    """Settle a message whose handler returned (`exc` None → ack) or raised `exc`."""
    if exc is None:
        await msg.ack()
        return "ack"
    delivery = msg.metadata.num_delivered
    last = delivery >= spec.max_deliveries
    if isinstance(exc, Retry):
        if last:
            return await _give_up(
                js, spec, msg, summary, reason="exhausted", error=f"Retry: {exc}", event_type=event_type
            )
        delay = exc.delay if exc.delay is not None else backoff(delivery)
        summary.fields.update(reason=str(exc), delay=delay)
        await msg.nak(delay=delay)
        return "retry"
    if isinstance(exc, Permanent):
        return await _give_up(js, spec, msg, summary, reason="permanent", error=str(exc), event_type=event_type)
    # Never the exception's text as such: a database error echoes the data that caused it.
    summary.fields.update(describe_error(exc))
    if last:
        return await _give_up(js, spec, msg, summary, reason="exhausted", error=error_text(exc), event_type=event_type)
    delay = backoff(delivery)
    summary.raise_level("error")
    summary.fields.update(delay=delay)
    await msg.nak(delay=delay)
    return "error"


async def _exhausted(
    js: JetStreamContext | None, spec: ConsumerSpec, msg: Msg, summary: _Summary, event_type: str
) -> str:
    # Delivered past the limit without being settled: the handler crashed the process or
    # outlived ack_wait every time. Do not run it again.
    delivery = msg.metadata.num_delivered
    return await _give_up(
        js,
        spec,
        msg,
        summary,
        reason="exhausted",
        error=f"delivered {delivery} times (max_deliveries={spec.max_deliveries}) without being settled",
        event_type=event_type,
    )


async def _run_handler(
    js: JetStreamContext | None, spec: ConsumerSpec, handler: Handler, msg: Msg, event: Event, summary: _Summary
) -> str:
    event_type = str(event.__struct_config__.tag)
    if msg.metadata.num_delivered > spec.max_deliveries:
        return await _exhausted(js, spec, msg, summary, event_type)
    beat = asyncio.create_task(_heartbeat(msg, max(spec.ack_wait_seconds / 3, 1.0)))
    failure: Exception | None = None
    try:
        await handler(event, msg)
    except Exception as exc:
        failure = exc
    finally:
        beat.cancel()
    return await _settle(js, spec, msg, summary, event_type, failure)


async def _decode(
    js: JetStreamContext | None, spec: ConsumerSpec, msg: Msg, summary: _Summary, core: dict[str, Any]
) -> Event | str:
    """The message's event (and its ids added to `core`), or the outcome of settling a message
    that does not decode as a known event."""
    try:
        event = decode_event(msg.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        tag = peek_type(msg.data)
        core["event_type"] = tag
        if tag is not None and tag not in KNOWN_EVENT_TAGS and is_wildcard(spec):
            # A newer replica's event type: not for us (SPEC §3, consumers ignore unknown types).
            await msg.ack()
            return "ignored"
        return await _give_up(js, spec, msg, summary, reason="undecodable", error=f"undecodable: {exc}", event_type=tag)
    core.update(_context(spec, event), event_type=str(event.__struct_config__.tag))
    return event


def _context(spec: ConsumerSpec, event: Event) -> dict[str, Any]:
    ctx: dict[str, Any] = {"event_id": event.event_id, "tenant_id": event.tenant_id, "consumer": spec.durable}
    email_id = getattr(event, "email_id", None)
    if email_id:
        ctx["email_id"] = email_id
    return ctx


def _log_handled(
    spec: ConsumerSpec, msg: Msg, summary: _Summary, core: dict[str, Any], outcome: str, elapsed: float
) -> None:
    fields = {k: v for k, v in summary.fields.items() if k != "event"}
    fields.update(core, outcome=outcome, duration_ms=round(elapsed * 1000, 1), delivery=msg.metadata.num_delivered)
    log.log(summary.level, "message.handled", **fields)
    MESSAGES_HANDLED.labels(consumer=spec.durable, outcome=outcome).inc()
    MESSAGE_SECONDS.labels(consumer=spec.durable).observe(elapsed)


async def handle_message(spec: ConsumerSpec, handler: Handler, msg: Msg, *, js: JetStreamContext | None = None) -> str:
    """Run one message through `handler`, settle it and log its summary line. Returns the outcome:
    ack | retry | error | ignored | dead_lettered | dead_letter_failed. `js` publishes dead letters."""
    started = time.perf_counter()
    summary = _Summary()
    token = _SUMMARY.set(summary)
    core: dict[str, Any] = {"consumer": spec.durable, "subject": msg.subject}
    # Tracing: a span per message, child of the publisher's context in its headers (None when off).
    span = tracing.start_message_span(spec.durable, msg)
    outcome = "crashed"
    try:
        with tracing.use(span):
            decoded = await _decode(js, spec, msg, summary, core)
            if isinstance(decoded, str):
                outcome = decoded
            else:
                with structlog.contextvars.bound_contextvars(**_context(spec, decoded)):
                    outcome = await _run_handler(js, spec, handler, msg, decoded, summary)
    finally:
        _SUMMARY.reset(token)
        tracing.end_message_span(span, outcome, core.get("event_id"))
    _log_handled(spec, msg, summary, core, outcome, time.perf_counter() - started)
    return outcome


# ----------------------------------------------------------------------------- batch mode


class BatchItem:
    """One message of a fetched batch, as a batch handler sees it: the decoded `event`, its `msg`,
    and what the handler decided about it (nothing: ack after the commit)."""

    __slots__ = ("_core", "_decision", "_summary", "event", "msg", "span")

    def __init__(
        self, event: Event, msg: Msg, summary: _Summary, core: dict[str, Any], span: Span | None = None
    ) -> None:
        self.event = event
        self.msg = msg
        self.span = span  # this message's tracing span (None when tracing is off)
        self._summary = summary
        self._core = core
        self._decision: Retry | Permanent | None = None

    @property
    def delivery(self) -> int:
        """How many times JetStream delivered this message (1 the first time)."""
        return self.msg.metadata.num_delivered or 1

    def note(self, level: Level | None = None, **fields: Any) -> None:
        """`note()` for this item's `message.handled` line."""
        self._summary.fields.update({k: v for k, v in fields.items() if v is not None})
        if level is not None:
            self._summary.raise_level(level)

    @property
    def decided(self) -> bool:
        """The handler marked it (`retry` / `permanent`)."""
        return self._decision is not None

    def retry(self, reason: str, delay: float | None = None) -> None:
        """Not applied (the handler changed nothing for it): nak it as `raise Retry(...)` would."""
        self._decision = Retry(reason, delay)

    def permanent(self, reason: str) -> None:
        """Never applicable (the handler changed nothing for it): dead-letter it as `raise Permanent`."""
        self._decision = Permanent(reason)

    def _reset(self) -> None:
        self._decision = None
        self._summary.fields.clear()
        self._summary.level = logging.INFO


async def _heartbeat_all(msgs: list[Msg], every: float) -> None:
    while True:
        await asyncio.sleep(every)
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.in_progress()


async def _apply_alone(js: JetStreamContext | None, spec: ConsumerSpec, handler: BatchHandler, item: BatchItem) -> str:
    """The per-message path: `item` as a batch of one, its failure classified like `consume`'s."""
    item._reset()
    token = _SUMMARY.set(item._summary)
    try:

        async def alone(_event: Event, _msg: Msg) -> None:
            await handler([item])
            if item._decision is not None:
                raise item._decision

        with structlog.contextvars.bound_contextvars(**_context(spec, item.event)), tracing.use(item.span):
            return await _run_handler(js, spec, alone, item.msg, item.event, item._summary)
    finally:
        _SUMMARY.reset(token)


async def _apply_batch(
    js: JetStreamContext | None, spec: ConsumerSpec, handler: BatchHandler, items: dict[int, BatchItem]
) -> dict[int, str]:
    batch = list(items.values())
    outcomes: dict[int, str] = {}
    try:
        # What the batch writes or calls is traced under its first message (one transaction for all).
        with (
            structlog.contextvars.bound_contextvars(consumer=spec.durable, batch=len(batch)),
            tracing.use(batch[0].span),
        ):
            await handler(batch)
    except Exception as exc:
        if _database_unreachable(exc):
            # Nothing was committed and no message is to blame; trying them one by one would
            # only wait out the pool's timeout once per message. All come back after the
            # backoff, as a batch.
            for i, item in items.items():
                outcomes[i] = await _settle(js, spec, item.msg, item._summary, _tag(item.event), exc)
            return outcomes
        # Nothing of the batch was committed: apply each message alone, so a poison one is
        # retried or dead-lettered by itself and the others go through.
        log.warning("consumer.batch_failed", consumer=spec.durable, batch=len(batch), **describe_error(exc))
        for i, item in items.items():
            outcomes[i] = await _apply_alone(js, spec, handler, item)
        return outcomes
    for i, item in items.items():
        item._core["batch"] = len(batch)
        outcomes[i] = await _settle(js, spec, item.msg, item._summary, _tag(item.event), item._decision)
    return outcomes


def _database_unreachable(exc: Exception) -> bool:
    """No connection (pool timeout, connection lost or refused, server shutting down), as
    opposed to an error a statement, and so some message's data, may have caused."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _DB_GOING_AWAY


def _tag(event: Event) -> str:
    return str(event.__struct_config__.tag)


async def handle_batch(
    spec: ConsumerSpec, handler: BatchHandler, msgs: list[Msg], *, js: JetStreamContext | None = None
) -> list[str]:
    """Apply one fetch through `handler` in one transaction (see the module docstring), settle
    every message and log one summary line each. Returns the outcomes in `msgs` order."""
    started = time.perf_counter()
    outcomes: dict[int, str] = {}
    cores: list[dict[str, Any]] = []
    summaries: list[_Summary] = []
    items: dict[int, BatchItem] = {}
    spans = [tracing.start_message_span(spec.durable, msg) for msg in msgs]
    for i, msg in enumerate(msgs):
        summary = _Summary()
        core: dict[str, Any] = {"consumer": spec.durable, "subject": msg.subject}
        summaries.append(summary)
        cores.append(core)
        with tracing.use(spans[i]):
            decoded = await _decode(js, spec, msg, summary, core)
            if isinstance(decoded, str):
                outcomes[i] = decoded
            elif msg.metadata.num_delivered > spec.max_deliveries:
                outcomes[i] = await _exhausted(js, spec, msg, summary, _tag(decoded))
            else:
                items[i] = BatchItem(decoded, msg, summary, core, spans[i])
    batch = list(items.values())
    # One heartbeat for every message until it is settled (acking one stops its in-progress
    # signals: the client refuses them for an acked message).
    beat = asyncio.create_task(_heartbeat_all([it.msg for it in batch], max(spec.ack_wait_seconds / 3, 1.0)))
    try:
        if len(batch) == 1:
            [(i, item)] = items.items()
            outcomes[i] = await _apply_alone(js, spec, handler, item)
        elif batch:
            outcomes.update(await _apply_batch(js, spec, handler, items))
    finally:
        beat.cancel()
        for i, span in enumerate(spans):
            tracing.end_message_span(span, outcomes.get(i, "crashed"), cores[i].get("event_id"))
    elapsed = time.perf_counter() - started
    for i, msg in enumerate(msgs):
        _log_handled(spec, msg, summaries[i], cores[i], outcomes[i], elapsed)
    return [outcomes[i] for i in range(len(msgs))]


async def _release_unhandled(psub: JetStreamContext.PullSubscription) -> None:
    """Messages that arrived for a fetch abandoned at stop sit in the subscription's queue: nak
    them so another replica gets them now rather than after ack_wait."""
    queue = getattr(getattr(psub, "_sub", None), "_pending_queue", None)
    while queue is not None and not queue.empty():
        msg = queue.get_nowait()
        if JetStreamContext.is_status_msg(msg) is None:
            with contextlib.suppress(Exception):
                await msg.nak()


async def _fetch(
    psub: JetStreamContext.PullSubscription, spec: ConsumerSpec, stop: asyncio.Event, batch: int
) -> list[Msg]:
    """One fetch of up to `batch` messages: [] when none came within a second or the fetch failed
    (logged, then a short pause); raises `Stopped` once `stop` is set."""
    try:
        return await until_stopped(stop, psub.fetch(batch=batch, timeout=1.0))
    except (TimeoutError, NatsTimeoutError):
        return []
    except Stopped:
        raise
    except Exception as exc:
        if stop.is_set():
            raise Stopped from exc
        log.warning("consumer.fetch_failed", consumer=spec.durable, error=repr(exc))
        await sleep_until_stopped(stop, 0.5)
        return []


@dataclass(frozen=True)
class Bulk:
    """`consume`'s backlog path: each fetch asks for up to `fetch` messages, and `take(msgs, free)`
    returns those of them (a sub-list; `free` = per-message slots free now) that `handler` applies
    together, in one transaction with `handle_batch`'s rules (acked after its commit; marked items
    settled as marked; a failing batch retried message by message through `handler`). The others
    go to the consumer's per-message handler."""

    handler: BatchHandler
    take: Callable[[list[Msg], int], list[Msg]]
    fetch: int = 256


async def consume(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handler: Handler,
    *,
    stop: asyncio.Event,
    concurrency: int = 16,
    bulk: Bulk | None = None,
) -> None:
    """Fetch from the durable consumer and run up to `concurrency` handlers at once until `stop`.
    `bulk`: messages of a fetch it takes are applied together first (see `Bulk`)."""
    psub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    slots = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[str]] = set()
    try:
        while not stop.is_set():
            free = concurrency - len(running)
            if free <= 0:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await _fetch(psub, spec, stop, free if bulk is None else max(free, bulk.fetch))
            except Stopped:
                break
            if bulk is not None and msgs:
                taken = bulk.take(msgs, free)
                if taken:
                    await handle_batch(spec, bulk.handler, taken, js=js)
                    chosen = {id(m) for m in taken}
                    msgs = [m for m in msgs if id(m) not in chosen]
            for msg in msgs:
                await slots.acquire()
                task = asyncio.create_task(handle_message(spec, handler, msg, js=js))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _t: slots.release())
    finally:
        if running:
            await asyncio.wait(running, timeout=10)
        with contextlib.suppress(Exception):
            await _release_unhandled(psub)
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


async def consume_batches(
    js: JetStreamContext,
    spec: ConsumerSpec,
    handler: BatchHandler,
    *,
    stop: asyncio.Event,
    max_batch: int = 100,
    concurrency: int = 2,
) -> None:
    """Fetch up to `max_batch` messages at a time (whatever is there: a fetch does not wait to
    fill up) and apply each fetch with `handle_batch`, up to `concurrency` batches at once, until
    `stop`."""
    psub = await js.pull_subscribe_bind(durable=spec.durable, stream=spec.stream)
    running: set[asyncio.Task[list[str]]] = set()
    try:
        while not stop.is_set():
            if len(running) >= concurrency:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await _fetch(psub, spec, stop, max_batch)
            except Stopped:
                break
            if not msgs:
                continue
            task = asyncio.create_task(handle_batch(spec, handler, msgs, js=js))
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        if running:
            await asyncio.wait(running, timeout=10)
        with contextlib.suppress(Exception):
            await _release_unhandled(psub)
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
