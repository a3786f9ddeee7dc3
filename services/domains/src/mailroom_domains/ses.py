"""The SES v2 calls the domains service makes, behind a small async interface.

botocore is blocking, so each call runs in a worker thread. (botocore itself, not boto3: boto3 adds
nothing for one client and its import, s3transfer included, doubled the service's start.) Connection failures, timeouts,
throttling and 5xx answers become `Unavailable`; the caller decides what that means
(an RPC error, or "try again next round" for the poller).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from mailroom_kit.logging import get_logger

from mailroom_domains.errors import InvalidInput, Unavailable
from mailroom_domains.settings import DomainsSettings

log = get_logger(__name__)

_TRANSIENT_CODES = frozenset(
    {
        "TooManyRequestsException",
        "Throttling",
        "ThrottlingException",
        "LimitExceededException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalServerError",
    }
)


@dataclass(frozen=True)
class SesIdentity:
    """What SES says about a domain identity (GetEmailIdentity)."""

    exists: bool
    verified_for_sending: bool
    verification_status: str  # PENDING | SUCCESS | FAILED | TEMPORARY_FAILURE | NOT_STARTED | NOT_FOUND
    dkim_status: str  # same values, for Easy DKIM
    dkim_tokens: tuple[str, ...]
    mail_from_domain: str | None
    mail_from_status: str | None  # PENDING | SUCCESS | FAILED | TEMPORARY_FAILURE

    @classmethod
    def missing(cls) -> SesIdentity:
        return cls(
            exists=False,
            verified_for_sending=False,
            verification_status="NOT_FOUND",
            dkim_status="NOT_FOUND",
            dkim_tokens=(),
            mail_from_domain=None,
            mail_from_status=None,
        )

    @classmethod
    def from_response(cls, resp: dict[str, Any]) -> SesIdentity:
        dkim = resp.get("DkimAttributes") or {}
        mail_from = resp.get("MailFromAttributes") or {}
        return cls(
            exists=True,
            verified_for_sending=bool(resp.get("VerifiedForSendingStatus", False)),
            verification_status=str(resp.get("VerificationStatus") or "PENDING"),
            dkim_status=str(dkim.get("Status") or "NOT_STARTED"),
            dkim_tokens=tuple(dkim.get("Tokens") or ()),
            mail_from_domain=mail_from.get("MailFromDomain"),
            mail_from_status=mail_from.get("MailFromDomainStatus"),
        )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unexpected(operation: str, exc: ClientError) -> Unavailable:
    """An SES answer we cannot act on (access denied, account paused, ...): the operator must look."""
    log.error("ses.unexpected_error", operation=operation, code=_error_code(exc), error=str(exc))
    return Unavailable(f"SES refused the request ({_error_code(exc) or 'error'})")


def _is_transient(exc: ClientError) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return _error_code(exc) in _TRANSIENT_CODES or status >= 500 or status == 429


class SesClient:
    """Domain-identity operations of SES v2 (Easy DKIM 2048-bit, custom MAIL FROM)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def create(cls, *, region: str, endpoint_url: str | None, timeout: float = 10.0, **credentials: str) -> SesClient:
        """A `sesv2` client; credentials come from the usual AWS chain unless given (tests)."""
        config = Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        client = botocore.session.get_session().create_client(
            "sesv2", region_name=region, endpoint_url=endpoint_url, config=config, **credentials
        )
        return cls(client)

    @classmethod
    def from_settings(cls, settings: DomainsSettings) -> SesClient:
        return cls.create(
            region=settings.aws_region, endpoint_url=settings.ses_endpoint_url, timeout=settings.ses_timeout_seconds
        )

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self._client, operation)
        try:
            result: dict[str, Any] = await asyncio.to_thread(method, **params)
        except ClientError as exc:
            if _is_transient(exc):
                raise Unavailable(f"SES is unavailable ({_error_code(exc) or 'error'})") from exc
            raise
        except BotoCoreError as exc:  # endpoint unreachable, timeouts, credentials
            raise Unavailable(f"SES is unreachable ({type(exc).__name__})") from exc
        return result

    async def create_domain_identity(self, name: str) -> tuple[str, ...]:
        """Create the identity with Easy DKIM (RSA 2048) and return its DKIM tokens.

        An identity that already exists in the account (a retried request, a domain that failed and
        is added again) is reused: its tokens are read back.
        """
        try:
            resp = await self._call(
                "create_email_identity",
                EmailIdentity=name,
                DkimSigningAttributes={"NextSigningKeyLength": "RSA_2048_BIT"},
            )
            tokens = tuple((resp.get("DkimAttributes") or {}).get("Tokens") or ())
        except ClientError as exc:
            code = _error_code(exc)
            if code == "AlreadyExistsException":
                tokens = (await self.get_identity(name)).dkim_tokens
            elif code in ("BadRequestException", "ValidationException"):
                raise InvalidInput(f"SES rejected the domain name: {exc}", param="name") from exc
            else:
                raise _unexpected("CreateEmailIdentity", exc) from exc
        if not tokens:
            raise Unavailable("SES returned no DKIM tokens for the identity")
        return tokens

    async def set_mail_from(self, name: str, mail_from_domain: str) -> None:
        try:
            await self._call(
                "put_email_identity_mail_from_attributes",
                EmailIdentity=name,
                MailFromDomain=mail_from_domain,
                BehaviorOnMxFailure="USE_DEFAULT_VALUE",
            )
        except ClientError as exc:
            if _error_code(exc) in ("BadRequestException", "ValidationException"):
                raise InvalidInput(f"SES rejected the MAIL FROM domain: {exc}", param="mail_from_subdomain") from exc
            raise _unexpected("PutEmailIdentityMailFromAttributes", exc) from exc

    async def get_identity(self, name: str) -> SesIdentity:
        try:
            resp = await self._call("get_email_identity", EmailIdentity=name)
        except ClientError as exc:
            if _error_code(exc) == "NotFoundException":
                return SesIdentity.missing()
            raise _unexpected("GetEmailIdentity", exc) from exc
        return SesIdentity.from_response(resp)

    async def delete_identity(self, name: str) -> bool:
        """Delete the identity (DELETE /v1/domains/{id}); False if SES had none (already deleted)."""
        try:
            await self._call("delete_email_identity", EmailIdentity=name)
        except ClientError as exc:
            if _error_code(exc) == "NotFoundException":
                return False
            raise _unexpected("DeleteEmailIdentity", exc) from exc
        return True
