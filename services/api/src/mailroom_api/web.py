"""HTTP plumbing shared by every route: request ids and the one summary log line per request,
the one exception mapper (SPEC §2 error bodies for our errors and Litestar's own), and the
before-request hook that authenticates the caller and strictly decodes the JSON body."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from mailroom_kit.db import Pool
from mailroom_kit.ids import new_id
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import HTTP_REQUESTS
from psycopg_pool import PoolClosed, PoolTimeout

from mailroom_api import service
from mailroom_api.errors import ApiError, unavailable, validation
from mailroom_api.settings import ApiSettings

log = get_logger("mailroom_api.http")

REQUEST_ID_KEY = "mailroom_request_id"
STARTED_KEY = "mailroom_started"
PRINCIPAL_KEY = "principal"
# Route handler `opt["auth"]`: "tenant" (API key), "tenant_sending" (sending_access keys allowed too),
# "operator" (operator token). Routes without it are public (health, schema).
AUTH_OPT = "auth"


def request_id(scope: Scope) -> str:
    state = scope.setdefault("state", {})
    rid = state.get(REQUEST_ID_KEY)
    if rid is None:
        rid = state[REQUEST_ID_KEY] = new_id("req")
    return str(rid)


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
        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            structlog.contextvars.unbind_contextvars("tenant_id", "api_key_id")


async def before_send(message: Message, scope: Scope) -> None:
    """Every response, including Litestar's own 404/405, carries X-Request-Id and is logged once."""
    if scope["type"] != "http" or message["type"] != "http.response.start":
        return
    rid = request_id(scope)
    headers = list(message.get("headers", []))
    headers.append((b"x-request-id", rid.encode()))
    message["headers"] = headers  # type: ignore[typeddict-unknown-key]
    state = scope["state"]
    status = int(message["status"])
    started = state.get(STARTED_KEY)
    principal = state.get(PRINCIPAL_KEY)
    path = scope.get("path", "")
    if path in ("/health", "/ready", "/metrics"):
        return
    HTTP_REQUESTS.labels(service="api", method=scope.get("method", ""), status=str(status)).inc()
    log.info(
        "request",
        request_id=rid,
        method=scope.get("method"),
        path=path,
        status=status,
        duration_ms=round((time.perf_counter() - started) * 1000, 2) if started else None,
        tenant_id=principal.tenant_id if principal is not None else None,
    )


# --------------------------------------------------------------------------- errors


def error_response(scope: Scope, error: ApiError) -> Response[dict[str, Any]]:
    body = {
        "error": error.code,
        "message": error.message,
        "param": error.param,
        "request_id": request_id(scope),
    }
    return Response(body, status_code=error.status, headers=error.headers, media_type="application/json")


_LITESTAR_CODES = {
    401: "invalid_api_key",
    403: "insufficient_permission",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    503: "unavailable",
}


def _from_http_exception(exc: HTTPException) -> ApiError:
    if isinstance(exc, ValidationException):
        extra = exc.extra if isinstance(exc.extra, list) else []
        first = extra[0] if extra and isinstance(extra[0], dict) else {}
        param = first.get("key") or None
        message = first.get("message") or "invalid request"
        return validation(f"{message}" + (f" ({param})" if param else ""), param)
    if isinstance(exc, NotFoundException):
        return ApiError(404, "not_found", "no such route")
    if isinstance(exc, MethodNotAllowedException):
        headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
        return ApiError(405, "method_not_allowed", "method not allowed for this route", headers=headers)
    status = exc.status_code
    if status == 413:
        return ApiError(413, "payload_too_large", "request body is too large")
    if status == 400:
        # Litestar's 400s come from undecodable bodies (SerializationException) and bad headers.
        return ApiError(400, "invalid_json", "request body is not valid JSON")
    code = _LITESTAR_CODES.get(status, "internal" if status >= 500 else "invalid_request")
    message = "internal error" if status >= 500 else str(exc.detail)
    return ApiError(status, code, message)


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, HTTPException):
        error = _from_http_exception(exc)
        if error.status >= 500:
            log.error("server error", error=repr(exc), request_id=request_id(request.scope))
    elif isinstance(exc, (psycopg.OperationalError, PoolTimeout, PoolClosed)):
        log.error("database unavailable", error=repr(exc), request_id=request_id(request.scope))
        error = unavailable("the database is unavailable; try again")
    else:
        log.exception("unhandled error", request_id=request_id(request.scope))
        error = ApiError(500, "internal", "internal error")
    return error_response(request.scope, error)


# --------------------------------------------------------------------------- JSON bodies


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"field `(?P<field>[^`]+)`")


def msgspec_param(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """(message, param) from a msgspec error: `Expected str - at $.to[1]` → `to[1]`; missing or
    unknown fields name the field itself."""
    text = str(exc)
    match = _AT.match(text)
    message = match.group("msg") if match else text
    path = (match.group("path") or "") if match else ""
    path = path.lstrip(".")
    field = _FIELD.search(message)
    if field and ("missing required field" in message or "unknown field" in message):
        path = f"{path}.{field.group('field')}" if path else field.group("field")
    return message, path or None


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def decode_body(request: Request[Any, Any, Any], body_type: Any) -> None:
    if not _is_json(request.content_type[0]):
        raise ApiError(400, "invalid_json", "Content-Type must be application/json")
    body = await request.body()
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        msgspec.convert(raw, body_type)
    except msgspec.ValidationError as exc:
        message, param = msgspec_param(exc)
        if param in getattr(body_type, "__not_yet_supported__", ()):
            message = f"`{param}` is part of the API but not supported by this version of Mailroom yet"
        raise validation(message, param) from None


def make_before_request(pool: Pool, settings: ApiSettings) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    async def before_request(request: Request[Any, Any, Any]) -> None:
        handler = request.route_handler
        auth = handler.opt.get(AUTH_OPT)
        authorization = request.headers.get("authorization")
        if auth == "operator":
            service.operator_allowed(settings.operator_token, authorization)
        elif auth in ("tenant", "tenant_sending"):
            async with pool.connection() as conn:
                principal = await service.authenticate(conn, authorization)
            request.scope["state"][PRINCIPAL_KEY] = principal
            structlog.contextvars.bind_contextvars(tenant_id=principal.tenant_id, api_key_id=principal.key_id)
            if auth == "tenant":
                principal.require_full_access()
        data_field = handler.parsed_data_field
        if data_field is not None:
            await decode_body(request, data_field.annotation)

    return before_request


def current_principal(request: Request[Any, Any, Any]) -> service.Principal:
    principal = request.scope["state"].get(PRINCIPAL_KEY)
    if not isinstance(principal, service.Principal):  # a route without opt["auth"] asked for it
        raise ApiError(500, "internal", "internal error")
    return principal
