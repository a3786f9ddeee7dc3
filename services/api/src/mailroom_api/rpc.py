"""Calls to the services that own what the API cannot answer alone (domains, webhooks), over NATS
request/reply, and the mapping of their answers onto the API's errors.

A reply's error is mapped by its class (`RpcError.kind`) first: validation 422, not_found 404,
conflict 409, forbidden 403 (each keeping the code when it is a SPEC code of that status, and the
`param`), transient 503 `unavailable` with `Retry-After`, internal 500 `internal` with no detail (the
other side has a bug; "try again" would be a lie). A reply with no class, or one this version does
not know, is mapped by its code as before: a known code keeps its status, anything else is 503.
No answer in time or an unreadable or empty reply is 503 `unavailable`: nothing was accepted."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from mailroom_contracts.rpc import RpcError
from mailroom_kit import rpc as kit_rpc
from mailroom_kit.logging import get_logger
from nats.aio.client import Client

from mailroom_api.errors import ApiError, unavailable

log = get_logger(__name__)

R = TypeVar("R", bound=msgspec.Struct)
V = TypeVar("V")

# SPEC §2 statuses for error codes another service may answer with (replies without a class).
RPC_STATUS = {
    "validation_error": 422,
    "not_found": 404,
    "conflict": 409,
    "insufficient_permission": 403,
    "unavailable": 503,
}

# Per class: its status, the code used when the reply's code is not a SPEC code of that status,
# and the SPEC §2 codes of that status a service may pass through.
_KIND_STATUS: dict[str, tuple[int, str, frozenset[str]]] = {
    "validation": (422, "validation_error", frozenset({"validation_error", "invalid_template_data"})),
    "not_found": (404, "not_found", frozenset({"not_found"})),
    "conflict": (409, "conflict", frozenset({"conflict", "idempotency_conflict", "idempotency_in_progress"})),
    "forbidden": (
        403,
        "insufficient_permission",
        frozenset(
            {
                "api_key_revoked",
                "insufficient_permission",
                "domain_not_verified",
                "from_domain_not_allowed",
                "recipient_suppressed",
                "tenant_paused",
                "tenant_blocked",
            }
        ),
    ),
}


def from_rpc(code: str, message: str, param: str | None, kind: str | None = None) -> ApiError:
    if kind == "internal":
        # The other side's message may describe its internals; say nothing.
        return ApiError(500, "internal", "internal error")
    if kind == "transient":
        return unavailable(message)
    known = _KIND_STATUS.get(kind) if kind is not None else None
    if known is not None:
        status, fallback, codes = known
        return ApiError(status, code if code in codes else fallback, message, param=param)
    by_code = RPC_STATUS.get(code)
    if by_code is None or by_code == 503:
        # The other side failed in a way the tenant cannot fix: nothing was accepted, try again.
        return unavailable(message if by_code == 503 else "a dependency failed; try again")
    return ApiError(by_code, code, message, param=param)


async def call(nc: Client, subject: str, request: msgspec.Struct, reply_type: type[R], *, timeout: float) -> R:
    """Send `request`, return the reply; raises the mapped ApiError if the reply carries an error."""
    try:
        reply = await kit_rpc.request(nc, subject, request, reply_type, timeout=timeout)
    except kit_rpc.RpcUnavailable:
        raise unavailable() from None
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise unavailable("a dependency answered with an unreadable reply") from None
    error: RpcError | None = getattr(reply, "error", None)
    if error is not None:
        if error.kind == "internal":
            # The responder logged its traceback; this line ties the 500 to the subject.
            log.error("rpc.internal_error", subject=subject)
        raise from_rpc(error.code, error.message, error.param, error.kind)
    return reply


def present(value: V | None, what: str) -> V:
    """A field the reply must carry when it has no error."""
    if value is None:
        raise unavailable(f"the {what} service gave an empty answer")
    return value
