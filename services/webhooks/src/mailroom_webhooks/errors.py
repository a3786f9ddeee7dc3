"""The service's one error type: each carries the SPEC §2 error code the RPC reply uses."""

from __future__ import annotations

from mailroom_contracts.rpc import RpcError


class WebhooksError(Exception):
    code = "internal"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_rpc(self) -> RpcError:
        return RpcError(code=self.code, message=self.message, param=self.param)


class ValidationError(WebhooksError):
    code = "validation_error"


class NotFoundError(WebhooksError):
    code = "not_found"
