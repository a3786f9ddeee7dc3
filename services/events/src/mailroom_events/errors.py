"""The events service's one error type, rendered in the SPEC §2 error format."""

from __future__ import annotations

from typing import Any


class EventsError(Exception):
    """An expected refusal or failure, with its HTTP status and SPEC §2 error code.

    `retry_after` (seconds) goes out as `Retry-After` on 503s: SNS redelivers 5xx answers.
    """

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self, request_id: str) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "param": None, "request_id": request_id}


def unavailable(message: str) -> EventsError:
    return EventsError(503, "unavailable", message, retry_after=5)
