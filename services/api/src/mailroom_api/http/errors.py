"""The one exception mapper: our `ApiError`s, Litestar's own HTTP errors (404 route, 405, 413,
undecodable bodies) and database outages all become SPEC §2 error bodies; anything else is a 500
`internal` that says nothing about the cause. Also the OpenAPI description of those errors."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import Scope
from mailroom_kit.http import request_id
from mailroom_kit.logging import get_logger
from mailroom_kit.redact import describe_error
from psycopg_pool import PoolClosed, PoolTimeout

from mailroom_api.errors import ApiError, unavailable, validation

log = get_logger("mailroom_api.http")


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    error: str
    message: str
    param: str | None
    request_id: str


def error_response(scope: Scope, error: ApiError) -> Response[dict[str, Any]]:
    body = {"error": error.code, "message": error.message, "param": error.param, "request_id": request_id(scope)}
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
    return error_response(request.scope, as_api_error(exc))


def as_api_error(exc: Exception) -> ApiError:
    """Any exception a handler raised, as the SPEC error it answers (logged when it is a server fault).
    Shared by `/v1`'s mapper and the Resend adapter's, which renders the same error in Resend's shape."""
    if isinstance(exc, ApiError):
        error = exc
    elif isinstance(exc, HTTPException):
        error = _from_http_exception(exc)
        if error.status >= 500:
            log.error("http.server_error", error=repr(exc))
    elif isinstance(exc, (psycopg.OperationalError, PoolTimeout, PoolClosed)):
        log.error("http.database_unavailable", error=repr(exc))
        error = unavailable("the database is unavailable; try again")
    else:
        log.error("http.unhandled_error", **describe_error(exc))
        error = ApiError(500, "internal", "internal error")
    return error


_ERROR_TEXT = {
    400: "invalid_json: the body is not JSON or the content type is wrong (or a malformed request)",
    401: "missing_api_key / invalid_api_key",
    402: "trial_expired: the tenant's operator-set trial has ended",
    403: "api_key_revoked, insufficient_permission, domain_not_verified, from_domain_not_allowed, "
    "tenant_paused, tenant_blocked",
    404: "not_found (also for other tenants' resources)",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error: `param` names the field",
    429: "rate_limited (the tenant's requests per second; a batch counts its items) or, on sends, quota_exceeded "
    "(the monthly quota of live recipients; it resets at the next UTC month); with Retry-After",
    503: "unavailable: a dependency is down; retry after Retry-After",
}


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI error responses of a route (all in the one error shape). 400 (malformed request), 401
    (credentials), 422 (a bad or unknown query parameter) and 503 (a dependency down) can happen on
    every route."""
    return {
        s: ResponseSpec(data_container=ErrorBody, description=_ERROR_TEXT[s], generate_examples=False)
        for s in sorted({400, 401, 422, 503, *statuses})
    }
