"""Request/reply over core NATS with msgspec payloads.

Responders join a queue group so any replica answers. Every reply type in
`mailroom_contracts.rpc` has an `error: RpcError | None` field, so a responder can always
answer with an error, and a requester maps a timeout/no-responder to `RpcUnavailable`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from mailroom_contracts import decode, encode
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from mailroom_kit.logging import get_logger

log = get_logger(__name__)

Req = TypeVar("Req", bound=msgspec.Struct)
Rep = TypeVar("Rep", bound=msgspec.Struct)


class RpcUnavailable(Exception):
    """Nobody answered in time: the owning service is down or overloaded."""


def _error_reply(code: str, message: str, param: str | None = None) -> bytes:
    return msgspec.json.encode({"error": {"code": code, "message": message, "param": param}})


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

    async def answer(msg: Msg) -> None:
        try:
            request = decode(msg.data, req_type)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            await msg.respond(_error_reply("validation_error", f"bad request: {exc}"))
            return
        try:
            reply = await handler(request)
        except Exception:
            log.exception("rpc handler failed", subject=subject)
            await msg.respond(_error_reply("internal", "internal error"))
            return
        await msg.respond(encode(reply))

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
    try:
        msg = await nc.request(subject, encode(req), timeout=timeout)
    except (NatsTimeoutError, NoRespondersError, TimeoutError) as exc:
        raise RpcUnavailable(subject) from exc
    return decode(msg.data, reply_type)
