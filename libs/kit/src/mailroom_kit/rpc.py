"""Request/reply over core NATS with msgspec payloads.

Responders join a queue group so any replica answers. Every reply type in
`mailroom_contracts.rpc` has an `error: RpcError | None` field, so a responder can always
answer with an error, and a requester maps a timeout/no-responder to `RpcUnavailable`.

`serve` writes the one summary line per request, `rpc.handled` (subject, outcome, duration_ms,
and the request's `tenant_id` when it has one, plus whatever the handler bound into the structlog
context), and counts `mailroom_rpc_requests_total{subject,outcome}` and
`mailroom_rpc_request_seconds{subject}`. Outcome is `ok`, the reply's error code
(`not_found`, `unavailable`, ...), `bad_request` (undecodable request) or `internal` (the handler
raised; logged at error level with the traceback). Handlers log no line of their own for it.

The errors `serve` answers itself carry their class (`RpcError.kind`): an undecodable request is
`validation_error`/`validation`; a handler that let a Postgres outage escape is
`unavailable`/`transient` (the requester may retry); any other exception is `internal`/`internal`
with no detail (a bug: retrying will not help, so the requester must not say "try again").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from mailroom_contracts import decode, encode
from mailroom_contracts.rpc import RpcError, rpc_error
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from psycopg import OperationalError
from psycopg_pool import PoolClosed, PoolTimeout

from mailroom_kit import tracing
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import RPC_REQUESTS, RPC_SECONDS
from mailroom_kit.redact import describe_error

log = get_logger(__name__)

Req = TypeVar("Req", bound=msgspec.Struct)
Rep = TypeVar("Rep", bound=msgspec.Struct)


class RpcUnavailable(Exception):
    """Nobody answered in time: the owning service is down or overloaded."""


# Postgres unreachable (or a statement cancelled by its timeout): nothing was committed, so
# the request can be retried. Anything else a handler raises is a bug.
_TRANSIENT = (OperationalError, PoolTimeout, PoolClosed)


def _error_reply(error: RpcError) -> bytes:
    return msgspec.json.encode({"error": error})


async def serve(
    nc: Client,
    subject: str,
    req_type: type[Req],
    handler: Callable[[Req], Awaitable[Any]],
    *,
    queue: str,
    concurrency: int = 32,
) -> Subscription:
    running: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(concurrency)

    def summary(outcome: str, started: float, *, level: int = logging.INFO, **fields: Any) -> None:
        seconds = time.perf_counter() - started
        RPC_REQUESTS.labels(subject=subject, outcome=outcome).inc()
        RPC_SECONDS.labels(subject=subject).observe(seconds)
        log.log(
            level,
            "rpc.handled",
            subject=subject,
            outcome=outcome,
            duration_ms=round(seconds * 1000, 2),
            **fields,
        )

    async def answer(msg: Msg) -> None:
        with tracing.rpc_span(subject, msg.headers):
            await _answer(msg)

    async def _answer(msg: Msg) -> None:
        # Runs in its own task, so what the handler binds into the log context ends with it.
        started = time.perf_counter()
        try:
            request = decode(msg.data, req_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            # The message names the field msgspec refused but never echoes the value.
            await msg.respond(_error_reply(rpc_error("validation", "validation_error", f"bad request: {exc}"[:300])))
            summary("bad_request", started, level=logging.WARNING, error=str(exc)[:200])
            return
        tenant_id = getattr(request, "tenant_id", None)
        if isinstance(tenant_id, str):
            structlog.contextvars.bind_contextvars(tenant_id=tenant_id)
        try:
            reply = await handler(request)
        except _TRANSIENT as exc:
            await msg.respond(_error_reply(rpc_error("transient", "unavailable", "a dependency is unavailable")))
            summary("unavailable", started, level=logging.WARNING, error=type(exc).__name__)
            return
        except Exception as exc:
            await msg.respond(_error_reply(rpc_error("internal", "internal", "internal error")))
            summary("internal", started, level=logging.ERROR, **describe_error(exc))
            return
        await msg.respond(encode(reply))
        error = getattr(reply, "error", None)
        code = getattr(error, "code", None)
        summary(code if isinstance(code, str) and code else "ok", started)

    async def on_request(msg: Msg) -> None:
        # nats-py runs a subscription's callbacks one at a time: answer each request in its own
        # task so one slow request (an SES call, say) never holds up the next.
        await slots.acquire()
        task = asyncio.create_task(answer(msg))
        running.add(task)
        task.add_done_callback(running.discard)
        task.add_done_callback(lambda _t: slots.release())

    return await nc.subscribe(subject, queue=queue, cb=on_request)


async def request(
    nc: Client, subject: str, req: msgspec.Struct, reply_type: type[Rep], *, timeout: float = 10.0
) -> Rep:
    headers: dict[str, str] | None = None
    if tracing.enabled():  # the caller's span: the responder's parent
        headers = {}
        tracing.inject(headers)
    try:
        msg = await nc.request(subject, encode(req), timeout=timeout, headers=headers or None)
    except (NatsTimeoutError, NoRespondersError, TimeoutError) as exc:
        raise RpcUnavailable(subject) from exc
    return decode(msg.data, reply_type)
