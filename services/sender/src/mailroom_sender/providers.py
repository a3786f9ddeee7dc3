"""Email providers behind one interface: SES v2 for live emails, the simulator for test mode.

A provider either returns a `SendResult` (accepted, with a message id) or raises one of
the `ProviderError` classes, which decide what happens to the email:
permanent → failed, transient → retried (certainly not sent), in doubt → wait for SES's
Send event (it may have been sent).
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import botocore.session
from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
)
from mailroom_contracts.events import BounceType, EmailQueued, Stream
from mailroom_contracts.ses import TAG_EMAIL_ID, TAG_MODE, TAG_TENANT_ID
from mailroom_kit import tracing
from prometheus_client import Histogram

from mailroom_sender.errors import (
    InDoubtProviderError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from mailroom_sender.mime import addr_spec, recipients
from mailroom_sender.ses_http import SendEmailClient, SesAnswered, SesNoAnswer, SesUnreachable, lean_send_client

SES_EVENT_TYPES = (
    "SEND",
    "DELIVERY",
    "BOUNCE",
    "COMPLAINT",
    "REJECT",
    "DELIVERY_DELAY",
    "RENDERING_FAILURE",
    "OPEN",
    "CLICK",
    "SUBSCRIPTION",  # opt-outs SES reports (issue 22): the api suppresses those recipients
)
# SES tracks opens (clicks) of the emails sent with a configuration set whose event destination
# matches OPEN (CLICK): so each tracking choice is a set of its own, the others never match them.
_TRACKING_EVENT_TYPES = frozenset({"OPEN", "CLICK"})
TRACKING_SUFFIXES = {
    (False, False): "",
    (True, False): "-opens",
    (False, True): "-clicks",
    (True, True): "-opens-clicks",
}


@dataclass(frozen=True)
class ConfigurationSet:
    name: str
    stream: Stream
    track_opens: bool
    track_clicks: bool

    @property
    def event_types(self) -> list[str]:
        """The SES event types its destination publishes: OPEN / CLICK only where tracking is on."""
        wanted = {"OPEN": self.track_opens, "CLICK": self.track_clicks}
        return [t for t in SES_EVENT_TYPES if t not in _TRACKING_EVENT_TYPES or wanted[t]]


def configuration_sets(*, transactional: str, broadcast: str) -> dict[tuple[Stream, bool, bool], ConfigurationSet]:
    """Every set the sender may send with: per stream its base name, plus `-opens`, `-clicks` and
    `-opens-clicks` for the tracking variants (e.g. `mailroom-broadcast-opens-clicks`)."""
    bases: dict[Stream, str] = {"transactional": transactional, "broadcast": broadcast}
    return {
        (stream, opens, clicks): ConfigurationSet(base + suffix, stream, opens, clicks)
        for stream, base in bases.items()
        for (opens, clicks), suffix in TRACKING_SUFFIXES.items()
    }


# SES error code → EmailFailed.reason. The request was refused and would be refused again.
PERMANENT_CODES = {
    "MessageRejected": "message_rejected",
    "MailFromDomainNotVerifiedException": "mail_from_domain_not_verified",
    "BadRequestException": "bad_request",
    "AccountSuspendedException": "account_suspended",
    "SendingPausedException": "sending_paused",
    "NotFoundException": "configuration_set_not_found",
}
# Throttling and server trouble: SES did not take the message; try again later.
TRANSIENT_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "InternalServiceErrorException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ConcurrentModificationException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Credentials/permissions are the operator's to fix; the email itself is fine, so keep it.
AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "MissingAuthenticationToken",
        "IncompleteSignature",
    }
)


@dataclass(frozen=True)
class SimulatedOutcome:
    """What SES's mailbox simulator would report for some recipients."""

    kind: Literal["delivered", "bounced", "complained"]
    recipients: tuple[str, ...]
    bounce_type: BounceType = "Permanent"
    bounce_subtype: str = "General"
    diagnostic_code: str | None = None
    smtp_response: str | None = None
    feedback_type: str | None = None


@dataclass(frozen=True)
class SendResult:
    provider: Literal["ses", "simulator"]
    message_id: str
    outcomes: tuple[SimulatedOutcome, ...] = field(default=())


class Provider(Protocol):
    async def send(self, email: EmailQueued, raw: bytes) -> SendResult: ...


# --------------------------------------------------------------------------- SES v2

# A server closes a keep-alive connection it has found idle for its timeout; a request written on
# it at that moment is lost with "Connection was closed before we received a valid response" and
# the send is in doubt. urllib3 already drops a pooled connection whose close has arrived; these
# pools also never reuse one idle for longer than `max_idle_seconds` (below any server's timeout),
# so a request never races the server's close.
_IDLE_SINCE = "_mailroom_idle_since"


class _IdleBoundedPool:
    max_idle_seconds: float = 2.0

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        idle_since = getattr(conn, _IDLE_SINCE, None)
        if idle_since is not None and time.monotonic() - idle_since > self.max_idle_seconds:
            conn.close()  # reconnects on the request it is taken for
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            setattr(conn, _IDLE_SINCE, time.monotonic())
        super()._put_conn(conn)  # type: ignore[misc]


def _idle_bounded_pools(client: BaseClient, max_idle_seconds: float) -> None:
    """Make the client's HTTP session use pools that drop connections idle too long."""
    attrs = {"max_idle_seconds": max_idle_seconds}
    pools = {
        "http": type("IdleBoundedHTTPConnectionPool", (_IdleBoundedPool, AWSHTTPConnectionPool), attrs),
        "https": type("IdleBoundedHTTPSConnectionPool", (_IdleBoundedPool, AWSHTTPSConnectionPool), attrs),
    }
    # botocore shares this one dict with every pool manager it makes (pools are made on first use).
    by_scheme = client._endpoint.http_session._pool_classes_by_scheme
    if set(by_scheme) != set(pools):
        raise RuntimeError(f"unexpected botocore HTTP session (pool classes {sorted(by_scheme)})")
    by_scheme.update(pools)


def _max_idle_seconds(client: BaseClient) -> float:
    """The idle bound `make_ses_client` gave the client's pools (2 s for any other client)."""
    pools = getattr(getattr(client._endpoint, "http_session", None), "_pool_classes_by_scheme", {})
    return float(getattr(pools.get("https"), "max_idle_seconds", _IdleBoundedPool.max_idle_seconds))


def make_ses_client(
    *,
    region: str,
    endpoint_url: str = "",
    max_pool_connections: int = 20,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_idle_seconds: float = 2.0,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
) -> BaseClient:
    """A thread-safe sesv2 client. Retries are off: the state machine decides what a failure means.
    A pooled connection idle for more than `max_idle_seconds` is not reused (see `_IdleBoundedPool`)."""
    config = Config(
        region_name=region,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    )
    # botocore's own client: boto3 adds nothing for one client, and its import (s3transfer included)
    # was a third of the service's start.
    client: BaseClient = botocore.session.get_session().create_client(
        "sesv2",
        region_name=region,
        endpoint_url=endpoint_url or None,
        config=config,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
    )
    _idle_bounded_pools(client, max_idle_seconds)
    return client


def _answered(code: str, message: str, status: int) -> ProviderError:
    """SES answered `status` with error `code`."""
    text = f"SES {code}: {message}".strip()
    if code in PERMANENT_CODES:
        return PermanentProviderError(text, reason=PERMANENT_CODES[code])
    if code in TRANSIENT_CODES or code in AUTH_CODES or status >= 500 or status in (0, 401, 403, 429):
        return TransientProviderError(text)
    # Any other 4xx: SES answered, refusing this request.
    return PermanentProviderError(text)


def classify(exc: Exception) -> ProviderError:
    """Map an exception from SendEmail (botocore's or the lean client's) to permanent, transient or in doubt."""
    if isinstance(exc, SesAnswered):  # the lean SendEmail client (ses_http.py)
        return _answered(exc.code, exc.message, exc.status)
    if isinstance(exc, SesUnreachable):
        return TransientProviderError(f"SES unreachable: {exc}")
    if isinstance(exc, SesNoAnswer):
        return InDoubtProviderError(f"SES outcome unknown (http): {exc}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return _answered(str(error.get("Code", "")), str(error.get("Message", "")), status)
    if isinstance(exc, ParamValidationError):
        return PermanentProviderError(f"invalid SES request: {exc}", reason="invalid_message")
    # Failures before a byte reached SES: certainly not sent.
    if isinstance(
        exc,
        EndpointConnectionError
        | ConnectTimeoutError
        | ProxyConnectionError
        | NoCredentialsError
        | PartialCredentialsError
        | NoRegionError,
    ):
        return TransientProviderError(f"SES unreachable: {exc}")
    # Read timeout, connection dropped mid-request, TLS error, anything unknown: SES may have the
    # message. Only its Send event (or the in-doubt timeout) settles it.
    kind = "botocore" if isinstance(exc, BotoCoreError) else type(exc).__name__
    return InDoubtProviderError(f"SES outcome unknown ({kind}): {exc}")


# SES SendEmail calls by outcome (the counts are the histogram's _count): latency and errors.
SES_SEND_SECONDS = Histogram("mailroom_ses_send_seconds", "SES SendEmail call latency", ["outcome"])
# The SES call's tracing span (OpenTelemetry's AWS SDK conventions).
_SES_SPAN = {"rpc.system": "aws-api", "rpc.service": "SESv2", "rpc.method": "SendEmail"}
_OUTCOMES = {
    TransientProviderError: "transient",
    PermanentProviderError: "permanent",
    InDoubtProviderError: "in_doubt",
}


class SesProvider:
    """Sends the raw MIME message with SES v2 SendEmail, tagged so SES events find the email again."""

    def __init__(
        self,
        client: BaseClient,
        *,
        configuration_set: str,
        max_concurrency: int,
        broadcast_configuration_set: str = "mailroom-broadcast",
    ) -> None:
        self._client = client
        # `configuration_set` is the transactional stream's base name (the only set before streams).
        self.configuration_sets = configuration_sets(
            transactional=configuration_set, broadcast=broadcast_configuration_set
        )
        self._executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="ses")
        # issue 15: SendEmail itself on the event loop (ses_http.py); botocore for everything else,
        # and for sends too when a proxy is configured (None).
        self._sender: SendEmailClient | None = lean_send_client(client, max_idle_seconds=_max_idle_seconds(client))

    def request(self, email: EmailQueued, raw: bytes) -> dict[str, Any]:
        """SendEmail parameters (Destination lists every envelope recipient, Bcc included)."""
        tags = {TAG_EMAIL_ID: email.email_id, TAG_TENANT_ID: email.tenant_id, TAG_MODE: email.mode}
        for name, value in email.tags.items():
            tags.setdefault(name, value)  # our tags win: SES events are matched through them
        destination = {
            key: [addr_spec(a) for a in addresses]
            for key, addresses in (
                ("ToAddresses", email.to),
                ("CcAddresses", email.cc),
                ("BccAddresses", email.bcc),
            )
            if addresses
        }
        return {
            "FromEmailAddress": addr_spec(email.from_),
            "Destination": destination,
            "Content": {"Raw": {"Data": raw}},
            "ConfigurationSetName": self.configuration_set_for(email).name,
            "EmailTags": [{"Name": k, "Value": v} for k, v in tags.items()],
        }

    async def _call(self, method: str, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(getattr(self._client, method), **kwargs))

    async def send(self, email: EmailQueued, raw: bytes) -> SendResult:
        started = time.perf_counter()
        try:
            with tracing.client_span("SES SendEmail", **_SES_SPAN):  # a no-op when tracing is off
                params = self.request(email, raw)
                if self._sender is not None:
                    response = await self._sender.send_email(params)
                else:
                    response = await self._call("send_email", **params)
        except Exception as exc:
            error = classify(exc)
            SES_SEND_SECONDS.labels(outcome=_OUTCOMES.get(type(error), "error")).observe(time.perf_counter() - started)
            raise error from exc
        SES_SEND_SECONDS.labels(outcome="accepted").observe(time.perf_counter() - started)
        return SendResult(provider="ses", message_id=str(response["MessageId"]))

    def configuration_set_for(self, email: EmailQueued) -> ConfigurationSet:
        """The set of the email's stream and tracking choice."""
        return self.configuration_sets[(email.stream, email.track_opens, email.track_clicks)]

    async def ensure_event_destination(self, *, topic_arn: str, destination_name: str) -> None:
        """Make every configuration set exist and publish its SES event types to `topic_arn`
        (idempotent; an existing destination is updated to converge)."""
        for cs in self.configuration_sets.values():
            await self._ensure_set(cs, topic_arn=topic_arn, destination_name=destination_name)

    async def _ensure_set(self, cs: ConfigurationSet, *, topic_arn: str, destination_name: str) -> None:
        try:
            await self._call("create_configuration_set", ConfigurationSetName=cs.name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                raise
        destination = {
            "Enabled": True,
            "MatchingEventTypes": cs.event_types,
            "SnsDestination": {"TopicArn": topic_arn},
        }
        try:
            await self._call(
                "create_configuration_set_event_destination",
                ConfigurationSetName=cs.name,
                EventDestinationName=destination_name,
                EventDestination=destination,
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
                raise
            # It exists: converge it (topic or event types may have changed since it was made).
            await self._call(
                "update_configuration_set_event_destination",
                ConfigurationSetName=cs.name,
                EventDestinationName=destination_name,
                EventDestination=destination,
            )

    async def send_quota(self) -> dict[str, float]:
        """issue 23: GetAccount's SendQuota (MaxSendRate, Max24HourSend, SentLast24Hours) for the governor."""
        response = await self._call("get_account")
        return {str(k): float(v) for k, v in response.get("SendQuota", {}).items()}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._sender is not None:
            self._sender.close()


# --------------------------------------------------------------------------- test-mode simulator

SIMULATOR_DOMAIN = "simulator.amazonses.com"


def simulate(addresses: Sequence[str]) -> tuple[SimulatedOutcome, ...]:
    """Outcomes per recipient, mirroring the SES mailbox simulator (labels like `bounce+x@` count)."""
    delivered: list[str] = []
    bounced: list[str] = []
    suppressed: list[str] = []
    complained: list[str] = []
    for address in addresses:
        local, _, domain = address.rpartition("@")
        box = local.split("+", 1)[0].lower() if domain.lower() == SIMULATOR_DOMAIN else ""
        if box == "bounce":
            bounced.append(address)
        elif box == "suppressionlist":
            suppressed.append(address)
        elif box == "complaint":
            delivered.append(address)
            complained.append(address)
        else:  # success, ooto (delivered, then an auto-reply SES does not report) and everyone else
            delivered.append(address)
    outcomes: list[SimulatedOutcome] = []
    if delivered:
        outcomes.append(
            SimulatedOutcome(kind="delivered", recipients=tuple(delivered), smtp_response="250 2.6.0 Message received")
        )
    if bounced:
        outcomes.append(
            SimulatedOutcome(
                kind="bounced",
                recipients=tuple(bounced),
                bounce_type="Permanent",
                bounce_subtype="General",
                diagnostic_code="smtp; 550 5.1.1 user unknown",
            )
        )
    if suppressed:
        outcomes.append(
            SimulatedOutcome(
                kind="bounced",
                recipients=tuple(suppressed),
                bounce_type="Permanent",
                bounce_subtype="OnAccountSuppressionList",
                diagnostic_code="Amazon SES did not send the message to this address because it is on the "
                "suppression list for your account.",
            )
        )
    if complained:
        outcomes.append(SimulatedOutcome(kind="complained", recipients=tuple(complained), feedback_type="abuse"))
    return tuple(outcomes)


class SimulatorProvider:
    """Test mode: never touches SES; reports what SES would, driven by the recipients."""

    async def send(self, email: EmailQueued, raw: bytes) -> SendResult:
        return SendResult(provider="simulator", message_id=f"sim-{uuid.uuid4()}", outcomes=simulate(recipients(email)))
