"""Calls to the services that own what the API cannot answer alone (domains, webhooks), over NATS
request/reply, and the mapping of their answers onto the API's errors: an error the tenant can fix
keeps its code and `param`; anything else (no answer in time, an unreadable or empty reply, a code
the API does not know) is 503 `unavailable`, because nothing was accepted."""

from __future__ import annotations

from typing import TypeVar

import msgspec
from mailroom_contracts.rpc import RpcError
from mailroom_kit import rpc as kit_rpc
from nats.aio.client import Client

from mailroom_api.errors import ApiError, unavailable

R = TypeVar("R", bound=msgspec.Struct)
V = TypeVar("V")

# SPEC §2 statuses for error codes another service may answer with.
RPC_STATUS = {
    "validation_error": 422,
    "not_found": 404,
    "conflict": 409,
    "insufficient_permission": 403,
    "unavailable": 503,
}


def from_rpc(code: str, message: str, param: str | None) -> ApiError:
    status = RPC_STATUS.get(code)
    if status is None or status == 503:
        # The other side failed in a way the tenant cannot fix: nothing was accepted, try again.
        return unavailable(message if status == 503 else "a dependency failed; try again")
    return ApiError(status, code, message, param=param)


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
        raise from_rpc(error.code, error.message, error.param)
    return reply


def present(value: V | None, what: str) -> V:
    """A field the reply must carry when it has no error."""
    if value is None:
        raise unavailable(f"the {what} service gave an empty answer")
    return value
