"""The service's one error type: each carries the SPEC §2 error code and the error class
(`RpcError.kind`) the RPC reply uses, so the API answers the status the class stands for."""

from __future__ import annotations

from mailroom_contracts.rpc import ErrorKind, RpcError, rpc_error


class WebhooksError(Exception):
    code = "internal"
    kind: ErrorKind = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_rpc(self) -> RpcError:
        return rpc_error(self.kind, self.code, self.message, self.param)


class ValidationError(WebhooksError):
    code = "validation_error"
    kind: ErrorKind = "validation"


class NotFoundError(WebhooksError):
    code = "not_found"
    kind: ErrorKind = "not_found"


class Unavailable(WebhooksError):
    """Postgres is unreachable: nothing was stored, the caller may try again."""

    code = "unavailable"
    kind: ErrorKind = "transient"


class ConflictError(WebhooksError):
    """The request is valid but the endpoint or delivery is in a state that forbids it (409)."""

    code = "conflict"
    kind: ErrorKind = "conflict"
