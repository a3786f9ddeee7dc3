"""The API's one error type. Every error response is rendered from an `ApiError`:
`{"error": code, "message": ..., "param": ..., "request_id": ...}` with the SPEC §2 status."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


def validation(message: str, param: str | None) -> ApiError:
    return ApiError(422, "validation_error", message, param=param)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def forbidden(code: str, message: str) -> ApiError:
    return ApiError(403, code, message)


def unavailable(message: str = "a dependency is unavailable; try again", retry_after: int = 5) -> ApiError:
    return ApiError(503, "unavailable", message, headers={"Retry-After": str(retry_after)})
