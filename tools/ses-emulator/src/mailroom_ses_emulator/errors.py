"""SES v2 errors, rendered with the AWS REST-JSON error convention."""

from __future__ import annotations

# Error code -> HTTP status, from botocore's sesv2 model (``error.httpStatusCode``).
ERROR_STATUS: dict[str, int] = {
    "AccountSuspendedException": 400,
    "AlreadyExistsException": 400,
    "BadRequestException": 400,
    "ConcurrentModificationException": 500,
    "ConflictException": 409,
    "InternalServiceErrorException": 500,
    "InvalidNextTokenException": 400,
    "LimitExceededException": 400,
    "MailFromDomainNotVerifiedException": 400,
    "MessageRejected": 400,
    "NotFoundException": 404,
    "SendingPausedException": 400,
    "TooManyRequestsException": 429,
}


class SesError(Exception):
    """An SES API error: ``code`` becomes ``x-amzn-ErrorType`` and boto3's ``Error.Code``."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else ERROR_STATUS.get(code, 400)


def not_found(message: str) -> SesError:
    return SesError("NotFoundException", message)


def already_exists(message: str) -> SesError:
    return SesError("AlreadyExistsException", message)


def bad_request(message: str) -> SesError:
    return SesError("BadRequestException", message)


def message_rejected(message: str) -> SesError:
    return SesError("MessageRejected", message)
