"""Errors in Resend's shape, `{"statusCode", "name", "message"}`, with Resend's names and statuses, so
the SDKs raise their typed exceptions. The error itself is decided once, by the same code as `/v1`
(`as_api_error`); only its rendering differs. A code with no Resend counterpart keeps its own name."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response

from mailroom_api.emails.idempotency import KEY_PARAM
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
    "unavailable": ("application_error", None),  # 503 with Retry-After
    "domain_not_verified": ("validation_error", 403),  # as Resend answers an unverified from-domain
    "from_domain_not_allowed": ("validation_error", 403),
    "payload_too_large": ("validation_error", 422),
    "invalid_template_data": ("validation_error", 422),
    "conflict": ("validation_error", 422),  # e.g. canceling an email that is no longer scheduled
    "idempotency_conflict": ("invalid_idempotent_request", 409),
    "idempotency_in_progress": ("concurrent_idempotent_requests", 409),
    # No Resend counterpart; kept (the SDKs raise their base ResendError): tenant_paused,
    # tenant_blocked (403), trial_expired (402).
}


def resend_error_body(error: ApiError) -> tuple[dict[str, Any], int]:
    given: int | None
    if error.code == "validation_error" and error.param == KEY_PARAM:
        name, given = "invalid_idempotency_key", 400
    else:
        name, given = RESEND_NAMES.get(error.code, (error.code, None))
    status = given or error.status
    message = error.message
    if error.param and error.param not in message:  # Resend's shape has no `param`: the message names it
        message = f"{error.param}: {message}"
    return {"statusCode": status, "name": name, "message": message}, status


def resend_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    error = as_api_error(exc)
    body, status = resend_error_body(error)
    return Response(body, status_code=status, headers=error.headers, media_type="application/json")
