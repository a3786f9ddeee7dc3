"""Strict JSON bodies: the content type must be JSON, the body a JSON object, and it must convert to
the route's request Struct (which forbids unknown fields). A failure names the field in `param`."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request as HttpRequest

from mailroom_api.errors import ApiError, validation


class Request(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body: a misspelt field is a validation error naming it, never ignored."""


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


async def decode_body(request: HttpRequest[Any, Any, Any], body_type: Any) -> None:
    """Check the body before the handler runs (Litestar then decodes it into `body_type`)."""
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
