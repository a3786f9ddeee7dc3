"""Request ids and the one summary line per request: every response, Litestar's own 404/405
included, carries `X-Request-Id`, and each request is logged once (`http.request`) with the fields
the route added through `add_log_fields` (the caller's tenant, say)."""

from __future__ import annotations

import time
from typing import Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import HTTP_REQUESTS

log = get_logger("mailroom_api.http")

REQUEST_ID_KEY = "mailroom_request_id"
STARTED_KEY = "mailroom_started"
LOG_FIELDS_KEY = "mailroom_log_fields"
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


def request_id(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    rid = state.get(REQUEST_ID_KEY)
    if rid is None:
        rid = state[REQUEST_ID_KEY] = new_id("req")
    return str(rid)


def add_log_fields(scope: Scope, **fields: Any) -> None:
    """Extra fields for this request's summary line (bound into the log context too)."""
    scope.setdefault("state", {}).setdefault(LOG_FIELDS_KEY, {}).update(fields)
    structlog.contextvars.bind_contextvars(**fields)


class RequestContextMiddleware:
    """Binds `request_id` into the structlog context for everything a matched request does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope["state"][STARTED_KEY] = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=rid):
            try:
                await self.app(scope, receive, send)
            finally:
                structlog.contextvars.unbind_contextvars(*scope["state"].get(LOG_FIELDS_KEY, {}))


async def before_send(message: Message, scope: Scope) -> None:
    """Adds X-Request-Id to the response and writes the summary line."""
    if scope["type"] != "http" or message["type"] != "http.response.start":
        return
    rid = request_id(scope)
    headers = list(message.get("headers", []))
    headers.append((b"x-request-id", rid.encode()))
    message["headers"] = headers  # type: ignore[typeddict-unknown-key]
    path = scope.get("path", "")
    if path in QUIET_PATHS:
        return
    state = scope["state"]
    status = int(message["status"])
    started = state.get(STARTED_KEY)
    HTTP_REQUESTS.labels(service="api", method=scope.get("method", ""), status=str(status)).inc()
    log.info(
        "http.request",
        request_id=rid,
        method=scope.get("method"),
        path=path,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
        **state.get(LOG_FIELDS_KEY, {}),
    )
