"""The sender's one error family: what went wrong and how the message is settled."""

from __future__ import annotations


class SenderError(Exception):
    """Base of every error the sender raises on purpose.

    `reason` is the machine-readable code published in `EmailFailed.reason` when the error
    ends an email.
    """

    reason: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class MessageBuildError(SenderError):
    """The email cannot be turned into a safe MIME message (e.g. CR/LF in a header): it fails."""

    reason = "invalid_message"


class ProviderError(SenderError):
    """The provider call did not return a message id."""

    reason = "provider_error"


class PermanentProviderError(ProviderError):
    """The provider refused the email and will refuse it again: the email fails."""

    reason = "provider_rejected"


class TransientProviderError(ProviderError):
    """The provider certainly did not accept it (throttled, 5xx, unreachable): retry later."""


class InDoubtProviderError(ProviderError):
    """The request may have reached the provider (e.g. read timeout): wait for its Send event."""
