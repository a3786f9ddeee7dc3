"""OpenAPI error responses of `/resend` routes: Resend's error shape (`errors.py` renders it), so
the document says what the SDKs actually receive."""

from __future__ import annotations

import msgspec
from litestar.openapi.datastructures import ResponseSpec


class ResendErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    statusCode: int
    name: str  # validation_error, missing_api_key, invalid_api_key, not_found, ...
    message: str


_TEXT = {
    400: "validation_error: the body is not JSON (or not an object)",
    401: "missing_api_key: no API key; restricted_api_key: the key may only send",
    403: "invalid_api_key: the key is unknown or revoked",
    404: "not_found: no such resource of this account",
    409: "conflict: the request conflicts with the resource's state (named in the message)",
    422: "validation_error: a field is missing or invalid (named in the message)",
    429: "rate_limit_exceeded / monthly_quota_exceeded, with Retry-After",
    503: "unavailable: a dependency is down; retry after Retry-After",
}


def documented(*statuses: int) -> dict[int, ResponseSpec]:
    """Like `mailroom_api.http.errors.documented`, in Resend's shape: 400, 401, 403, 422, 429, 503
    can happen on every route."""
    return {
        s: ResponseSpec(data_container=ResendErrorBody, description=_TEXT[s], generate_examples=False)
        for s in sorted({400, 401, 403, 422, 429, 503, *statuses})
    }
