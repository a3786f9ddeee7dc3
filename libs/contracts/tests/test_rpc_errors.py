"""`RpcError.kind` grows the contract compatibly: old replies (no kind) and newer classes decode,
and an older requester reading a new reply ignores the field."""

from __future__ import annotations

import msgspec
from mailroom_contracts import decode, encode
from mailroom_contracts.rpc import ERROR_KINDS, KIND_OF_CODE, RpcError, WebhookReply, rpc_error


class OldRpcError(msgspec.Struct, frozen=True, kw_only=True):
    """RpcError as it was before `kind`."""

    code: str
    message: str
    param: str | None = None


class OldWebhookReply(msgspec.Struct, frozen=True, kw_only=True):
    error: OldRpcError | None = None


def test_reply_of_an_older_responder_has_no_kind() -> None:
    old = encode(OldWebhookReply(error=OldRpcError(code="not_found", message="webhook not found")))
    assert decode(old, WebhookReply).error == RpcError(code="not_found", message="webhook not found", kind=None)


def test_older_requester_reads_a_new_reply() -> None:
    new = encode(WebhookReply(error=rpc_error("validation", "validation_error", "bad", "description")))
    assert decode(new, OldWebhookReply).error == OldRpcError(
        code="validation_error", message="bad", param="description"
    )


def test_a_class_this_version_does_not_know_still_decodes() -> None:
    raw = b'{"error": {"code": "conflict", "message": "m", "param": null, "kind": "from_the_future"}}'
    error = decode(raw, WebhookReply).error
    assert error is not None and error.kind == "from_the_future" and error.kind not in ERROR_KINDS


def test_every_code_maps_to_a_known_class() -> None:
    assert set(KIND_OF_CODE.values()) <= ERROR_KINDS
    assert ERROR_KINDS == {"validation", "not_found", "conflict", "forbidden", "transient", "internal"}
    round_trip = decode(encode(WebhookReply(error=rpc_error("transient", "unavailable", "try again"))), WebhookReply)
    assert round_trip.error is not None and round_trip.error.kind == "transient"
