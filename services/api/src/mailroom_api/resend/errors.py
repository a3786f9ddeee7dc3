"""Errors in Resend's shape, `{"statusCode", "name", "message"}`, with Resend's names and statuses, so
the SDKs raise their typed exceptions. The error itself is decided once, by the same code as `/v1`
(`as_api_error`); only its rendering differs. A code with no Resend counterpart keeps its own name."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from mailroom_api.errors import ApiError
from mailroom_api.http.errors import as_api_error

# Mailroom's code → (Resend's name, Resend's status); None keeps Mailroom's status.
RESEND_NAMES: dict[str, tuple[str, int | None]] = {
    "missing_api_key": ("missing_api_key", 401),
    "invalid_api_key": ("invalid_api_key", 403),
    "api_key_revoked": ("invalid_api_key", 403),
    "insufficient_permission": ("restricted_api_key", 401),
    "validation_error": ("validation_error", 422),
    "invalid_json": ("validation_error", 400),
    "not_found": ("not_found", 404),
    "method_not_allowed": ("method_not_allowed", 405),
    "rate_limited": ("rate_limit_exceeded", 429),
    "quota_exceeded": ("monthly_quota_exceeded", 429),
    "internal": ("application_error", 500),
}


def resend_error_body(error: ApiError) -> tuple[dict[str, Any], int]:
    name, status = RESEND_NAMES.get(error.code, (error.code, None))
    status = status or error.status
    return {"statusCode": status, "name": name, "message": error.message}, status


def resend_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    error = as_api_error(exc)
    body, status = resend_error_body(error)
    return Response(body, status_code=status, headers=error.headers, media_type="application/json")
