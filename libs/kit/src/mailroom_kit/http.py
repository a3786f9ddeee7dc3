"""The request plumbing every Litestar app of Mailroom shares: a request id per request
(`x-request-id` on every response), the structlog context of the request, and the one summary
line `http.request` per request with its metrics.

    logging = request_logging("events")
    Litestar(..., middleware=logging.middleware, before_send=logging.before_send)

Litestar runs app-level middleware only for requests that matched a route, so its own 404/405
never pass through it; the header, the line and the metrics are therefore written in a
`before_send` hook, which sees every response. The middleware binds `request_id` into the
structlog context for everything a matched request logs, and afterwards unbinds whatever the
request bound (so `tenant_id` bound by an auth hook never outlives its request).

The line carries method, path (never the query string), status, duration_ms, request_id, the
structlog context of the request, and whatever the edge passed to `add_log_fields`. Bodies and
headers (Authorization among them) are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import structlog
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, BeforeMessageSendHookHandler, Message, Receive, Scope, Send

from mailroom_kit import tracing
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS

log = get_logger("mailroom_kit.http")

REQUEST_ID_KEY = "mailroom_request_id"
STARTED_KEY = "mailroom_started"
LOG_FIELDS_KEY = "mailroom_log_fields"
REQUEST_ID_HEADER = b"x-request-id"
DEFAULT_QUIET_PATHS = ("/health", "/ready", "/metrics")
# Anything else a client sends becomes "OTHER": a metric label must not take arbitrary values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id(scope: Scope) -> str:
    """This request's id (`req_…`), assigned on first use and kept in the scope's state."""
    state = scope.setdefault("state", {})
    rid = state.get(REQUEST_ID_KEY)
    if rid is None:
        rid = state[REQUEST_ID_KEY] = new_id("req")
    return str(rid)


def add_log_fields(scope: Scope, **fields: Any) -> None:
    """Extra fields for this request's summary line (e.g. `tenant_id`, an outcome)."""
    scope.setdefault("state", {}).setdefault(LOG_FIELDS_KEY, {}).update(fields)


class RequestContextMiddleware:
    """Binds `request_id` for a matched request, times it, and unbinds what it bound."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["state"].setdefault(STARTED_KEY, time.perf_counter())
        before = structlog.contextvars.get_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id(scope))
        try:
            if tracing.enabled() and scope.get("path") not in DEFAULT_QUIET_PATHS:  # a span per request
                route = scope.get("path_template") or "unmatched"
                with tracing.http_span(str(scope.get("method", "")), route, scope.get("headers", ())):
                    await self.app(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            after = structlog.contextvars.get_contextvars()
            structlog.contextvars.unbind_contextvars(*(key for key in after if key not in before))
            changed = {key: value for key, value in before.items() if after.get(key) is not value}
            if changed:
                structlog.contextvars.bind_contextvars(**changed)


@dataclass(frozen=True)
class RequestLogging:
    """What to pass to `Litestar(middleware=..., before_send=...)`."""

    middleware: list[DefineMiddleware]
    before_send: list[BeforeMessageSendHookHandler]


def request_logging(service: str, *, quiet_paths: Collection[str] = DEFAULT_QUIET_PATHS) -> RequestLogging:
    """Request ids, the `http.request` summary line and `mailroom_http_*` metrics for `service`.
    Requests to `quiet_paths` (probes, scrapes) get the header but no line and no metric."""
    quiet = frozenset(quiet_paths)
    # (route template, method, status) → its counter and histogram children: few keys (templates,
    # not paths), so the dict stays small.
    children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def before_send(message: Message, scope: Scope) -> None:
        if scope["type"] != "http" or message["type"] != "http.response.start":
            return
        rid = request_id(scope)
        headers = list(message.get("headers", []))
        if not any(name.lower() == REQUEST_ID_HEADER for name, _ in headers):
            headers.append((REQUEST_ID_HEADER, rid.encode()))
            message["headers"] = headers  # type: ignore[typeddict-unknown-key]
        path = scope.get("path", "")
        if path in quiet:
            return
        state = scope["state"]
        status = int(message["status"])
        tracing.set_http_status(status)
        method = scope.get("method", "")
        started = state.get(STARTED_KEY)
        # None when Litestar answered before routing (unknown route or method): nothing timed it.
        seconds = time.perf_counter() - started if started is not None else None
        route = scope.get("path_template") or "unmatched"  # set by Litestar's router once it matched
        labelled = method if method in _METHODS else "OTHER"  # (a client's method is not a key)
        key = (route, labelled, status)
        counted = children.get(key)
        if counted is None:  # labels() takes a lock and builds its key each time: once per key
            code = str(status)
            counted = children[key] = (
                HTTP_REQUESTS.labels(service=service, route=route, method=labelled, status=code),
                HTTP_REQUEST_SECONDS.labels(service=service, route=route, status=code),
            )
        counted[0].inc()
        if seconds is not None:
            counted[1].observe(seconds)
        # A route whose path holds a capability (an unsubscribe token) logs its template instead:
        # `add_log_fields(scope, path="/v1/unsubscribe/{token}")`.
        fields = {"path": path, **state.get(LOG_FIELDS_KEY, {})}
        fields.update(
            method=method,
            status=status,
            duration_ms=round(seconds * 1000, 2) if seconds is not None else None,
            request_id=rid,
        )
        log.info("http.request", **fields)

    return RequestLogging(middleware=[DefineMiddleware(RequestContextMiddleware)], before_send=[before_send])
