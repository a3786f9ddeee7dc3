"""Durable pull consumer loop with explicit, classified acks.

A handler returns normally → ack. It raises `Retry` (or any unexpected exception) →
nak with backoff growing with the delivery count (transient). It raises `Permanent` →
term; the handler must already have recorded the failure (e.g. a `failed` event in the
same transaction). An undecodable message is terminated and logged as an error.
Long handlers keep the message alive with in-progress heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from mailroom_contracts import decode_event
from mailroom_contracts.events import Event
from mailroom_contracts.streams import ConsumerSpec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import MESSAGE_SECONDS, MESSAGES_HANDLED

log = get_logger(__name__)

Handler = Callable[[Event, Msg], Awaitable[None]]
BACKOFF_SECONDS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class Retry(Exception):
    """Transient: try again later (after `delay` seconds, or the backoff schedule)."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Permanent(Exception):
    """Will never succeed: terminate the message (the handler recorded the failure)."""


def backoff(num_delivered: int) -> float:
    return BACKOFF_SECONDS[min(max(num_delivered, 1), len(BACKOFF_SECONDS)) - 1]


async def _heartbeat(msg: Msg, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def handle_message(spec: ConsumerSpec, handler: Handler, msg: Msg) -> str:
    """Run one message through `handler` and settle it. Returns the outcome label."""
    started = time.perf_counter()
    try:
        event = decode_event(msg.data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        log.error("undecodable message terminated", consumer=spec.durable, subject=msg.subject, error=str(exc))
        await msg.term()
        MESSAGES_HANDLED.labels(consumer=spec.durable, outcome="undecodable").inc()
        return "undecodable"
    ctx = {"event_id": event.event_id, "tenant_id": event.tenant_id, "consumer": spec.durable}
    email_id = getattr(event, "email_id", None)
    if email_id:
        ctx["email_id"] = email_id
    outcome = "ack"
    with structlog.contextvars.bound_contextvars(**ctx):
        beat = asyncio.create_task(_heartbeat(msg, max(spec.ack_wait_seconds / 3, 1.0)))
        try:
            await handler(event, msg)
        except Retry as exc:
            outcome = "retry"
            delay = exc.delay if exc.delay is not None else backoff(msg.metadata.num_delivered)
            log.info("message retried", reason=str(exc), delay=delay, subject=msg.subject)
            await msg.nak(delay=delay)
        except Permanent as exc:
            outcome = "term"
            log.warning("message terminated", reason=str(exc), subject=msg.subject)
            await msg.term()
        except Exception as exc:
            outcome = "error"
            delay = backoff(msg.metadata.num_delivered)
            log.exception("message handler failed; will retry", subject=msg.subject, delay=delay, error=repr(exc))
            await msg.nak(delay=delay)
        else:
            await msg.ack()
        finally:
            beat.cancel()
        elapsed = time.perf_counter() - started
        log.info(
            "message handled",
            subject=msg.subject,
            outcome=outcome,
            duration_ms=round(elapsed * 1000, 1),
            delivery=msg.metadata.num_delivered,
        )
        MESSAGES_HANDLED.labels(consumer=spec.durable, outcome=outcome).inc()
        MESSAGE_SECONDS.labels(consumer=spec.durable).observe(elapsed)
    return outcome


async def consume(
    js: JetStreamContext, spec: ConsumerSpec, handler: Handler, *, stop: asyncio.Event, concurrency: int = 16
) -> None:
    """Fetch from the durable consumer and run up to `concurrency` handlers at once until `stop`."""
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
                msgs = await psub.fetch(batch=free, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:
                if stop.is_set():
                    break
                log.warning("fetch failed", consumer=spec.durable, error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await slots.acquire()
                task = asyncio.create_task(handle_message(spec, handler, msg))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _t: slots.release())
    finally:
        if running:
            await asyncio.wait(running, timeout=10)
        with contextlib.suppress(Exception):
            await psub.unsubscribe()
