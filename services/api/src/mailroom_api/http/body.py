"""Strict JSON bodies: the content type must be JSON, the body UTF-8 JSON nested at most
`MAX_DEPTH` levels, an object, with no NUL in any string (key or value, at any depth: Postgres
refuses NUL in text and jsonb, so it must never get that far), and it must convert to the route's
request Struct (which forbids unknown fields and carries the fields' bounds as `msgspec.Meta`).
A failure names the field in `param`. All of it is decided before any database call."""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec
from litestar import Request as HttpRequest
from litestar.utils.scope.state import ScopeState

from mailroom_api.errors import ApiError, validation

# Deeper than any real body (metadata is free-form JSON of at most 4 KiB); bounds the walk below.
MAX_DEPTH = 32


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


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_json_value(value: Any) -> None:
    """Walk a decoded JSON value once (iteratively): too deep → 400 `invalid_json`; a NUL in any
    key or string → 422 naming its path (`metadata.a[0].b`)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise validation("strings must not contain NUL (\\u0000)", path or None)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise ApiError(400, "invalid_json", f"request body is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if "\x00" in key:
                        raise validation("keys must not contain NUL (\\u0000)", _child(path, key))
                    stack.append((child, _child(path, key), depth + 1))
            else:
                stack.extend((child, _child(path, i), depth + 1) for i, child in enumerate(item))


async def decode_body(request: HttpRequest[Any, Any, Any], body_type: Any) -> None:
    """Check and convert the body before the handler runs. The result is left where Litestar's
    `request.json()` keeps a decoded body, so the handler's `data` is this very Struct (msgspec
    passes an instance of the target type through) and the body is decoded once."""
    if not _is_json(request.content_type[0]):
        raise ApiError(400, "invalid_json", "Content-Type must be application/json")
    body = await request.body()
    try:
        raw = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for invalid UTF-8
        raise ApiError(400, "invalid_json", "request body is not valid UTF-8 JSON") from None
    except RecursionError:  # nested deeper than msgspec's own limit
        raise ApiError(400, "invalid_json", f"request body is nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(raw, list) and typing.get_origin(body_type) is list:
        pass  # a route whose body is a JSON array (Resend's batch, issue 21)
    elif not isinstance(raw, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    check_json_value(raw)
    try:
        converted = msgspec.convert(raw, body_type)
    except msgspec.ValidationError as exc:
        message, param = msgspec_param(exc)
        if param in getattr(body_type, "__not_yet_supported__", ()):
            message = f"`{param}` is part of the API but not supported by this version of Mailroom yet"
        raise validation(message, param) from None
    ScopeState.from_scope(request.scope).json = converted
