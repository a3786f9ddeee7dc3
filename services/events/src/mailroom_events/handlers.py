"""HTTP edge: `POST /ses/sns`, the SNS HTTP(S) subscription endpoint, and the error mapper.

Status codes are chosen for SNS's retry policy: 2xx ends delivery (also for an authentic
message we cannot use, so it is not redelivered for days), 4xx refuses a forged or malformed
one, 5xx (certificate or database temporarily unavailable) makes SNS redeliver later.

Each request is logged once, by the kit (`mailroom_kit.http`): its `http.request` line carries
`sns_message_id`, `sns_type`, `topic_arn`, the `outcome` (or the `error` code and `reason` of a
refusal, and `sns_rejected`, the verifier's reason), and for SES events `ses_event_type`,
`email_id`, `tenant_id`, `event_ids`.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import structlog
from litestar import Request, Response, post
from litestar.exceptions import HTTPException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from mailroom_kit.group_commit import GroupWriter
from mailroom_kit.http import add_log_fields, request_id
from mailroom_kit.logging import get_logger
from mailroom_kit.redact import describe_error
from mailroom_kit.runtime import Runtime

from mailroom_events import repository, service
from mailroom_events.errors import EventsError, unavailable
from mailroom_events.metrics import SNS_MESSAGES
from mailroom_events.sns import SnsRejected, SnsVerifier

log = get_logger("mailroom_events.http")

MAX_BODY = 256 * 1024  # SNS messages are at most 256 KiB


def error_response(request: Request[Any, Any, Any], exc: EventsError) -> Response[dict[str, Any]]:
    """The SPEC §2 error body; the kit's before_send adds X-Request-Id (the same id)."""
    add_log_fields(request.scope, error=exc.code, reason=exc.message)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    return Response(exc.body(request_id(request.scope)), status_code=exc.status, headers=headers)


def refusal(exc: SnsRejected) -> EventsError:
    """Map a verifier refusal: malformed → 400, transient (certificate fetch) → 503, else 403."""
    if exc.reason == "bad_json":
        return EventsError(400, "invalid_json", "body is not a well-formed SNS message")
    if exc.transient:
        return unavailable("the signing certificate could not be fetched; try again")
    return EventsError(403, "forbidden", f"SNS message refused: {exc.reason}")


async def _handle(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    verifier: SnsVerifier,
    client: httpx.AsyncClient,
    groups: GroupWriter[repository.Record, bool],
) -> str:
    try:
        body = await request.body()
    except RequestEntityTooLarge:
        raise EventsError(413, "payload_too_large", "SNS messages are at most 256 KiB") from None
    try:
        msg = await verifier.verify(body)
    except SnsRejected as exc:
        SNS_MESSAGES.labels(outcome="refused").inc()
        add_log_fields(request.scope, sns_rejected=exc.reason)
        raise refusal(exc) from None
    structlog.contextvars.bind_contextvars(sns_message_id=msg.MessageId, sns_type=msg.Type, topic_arn=msg.TopicArn)
    try:
        if msg.Type == "SubscriptionConfirmation":
            await service.confirm_subscription(verifier, client, msg)
            async with runtime.pool.connection() as conn, conn.transaction():
                await service.record_confirmation(conn, msg.TopicArn)
            return "confirmed"
        if msg.Type == "UnsubscribeConfirmation":
            # Worth a line of its own: SES events stop arriving from this topic.
            log.warning("sns.unsubscribe_confirmation")
            return "ignored"
        return await service.ingest_grouped(groups, runtime.pool, msg)
    except psycopg.OperationalError as exc:  # includes the pool's timeout: nothing was committed
        add_log_fields(request.scope, db_error=type(exc).__name__)
        raise unavailable("the database is unavailable; try again") from None


def sns_handler(
    runtime: Runtime,
    verifier: SnsVerifier,
    client: httpx.AsyncClient,
    groups: GroupWriter[repository.Record, bool],
) -> Any:
    @post(
        "/ses/sns",
        status_code=200,
        request_max_body_size=MAX_BODY,
        summary="SNS HTTP(S) subscription endpoint for SES events",
    )
    async def receive(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        try:
            outcome = await _handle(request, runtime, verifier, client, groups)
        except EventsError as exc:
            return error_response(request, exc)
        add_log_fields(request.scope, outcome=outcome)
        return Response({"status": outcome})

    return receive


_HTTP_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Litestar's own refusals (unknown route, wrong method, ...) in the SPEC §2 error format."""
    code = _HTTP_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "bad_request")
    return error_response(request, EventsError(exc.status_code, code, str(exc.detail)))


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    # A bug: the traceback gets a line of its own, next to the request's summary line.
    log.error("http.unhandled_error", request_id=request_id(request.scope), **describe_error(exc))
    return error_response(request, EventsError(500, "internal", "internal error"))
