"""The one error type of the domains service; `code` is a SPEC §2 error code and `kind` the error's
class, both sent back in RpcError (the API answers the status of the class)."""

from __future__ import annotations

from mailroom_contracts.rpc import ErrorKind, RpcError, rpc_error


class DomainsError(Exception):
    """An expected outcome the caller must be told about (never a crash)."""

    code = "internal"
    kind: ErrorKind = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_rpc(self) -> RpcError:
        return rpc_error(self.kind, self.code, self.message, self.param)


class InvalidInput(DomainsError):
    code = "validation_error"
    kind: ErrorKind = "validation"


class Conflict(DomainsError):
    code = "conflict"
    kind: ErrorKind = "conflict"


class Unavailable(DomainsError):
    """A dependency (SES, Postgres) is unreachable; nothing was half-done that a retry cannot finish."""

    code = "unavailable"
    kind: ErrorKind = "transient"


class NotFound(DomainsError):
    """No such domain of this tenant (another tenant's id reads the same: existence never leaks)."""

    code = "not_found"
    kind: ErrorKind = "not_found"
