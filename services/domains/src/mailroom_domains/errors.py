"""The one error type of the domains service; `code` is a SPEC §2 error code sent back in RpcError."""

from __future__ import annotations

from mailroom_contracts.rpc import RpcError


class DomainsError(Exception):
    """An expected outcome the caller must be told about (never a crash)."""

    code = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_rpc(self) -> RpcError:
        return RpcError(code=self.code, message=self.message, param=self.param)


class InvalidInput(DomainsError):
    code = "validation_error"


class Conflict(DomainsError):
    code = "conflict"


class Unavailable(DomainsError):
    """A dependency (SES, Postgres) is unreachable; nothing was half-done that a retry cannot finish."""

    code = "unavailable"
