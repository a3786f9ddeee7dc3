"""One delivery attempt over HTTP: sign, POST through the pinned client, classify the answer."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
from mailroom_contracts.rpc import WEBHOOK_RESPONSE_BODY_MAX_BYTES

from mailroom_webhooks import resend_format
from mailroom_webhooks.service import ADDRESS_NOT_ALLOWED, AttemptResult, Claim
from mailroom_webhooks.signing import sign
from mailroom_webhooks.transport import AddressNotAllowed


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - (now or datetime.now(UTC))).total_seconds(), 0.0)


def signed_headers(
    *, secret: str, msg_id: str, body: bytes, timestamp: int | None = None, previous_secret: str | None = None
) -> dict[str, str]:
    """Standard Webhooks headers. During a rotation's overlap `previous_secret` signs too: the
    signatures are space-separated (`v1,<new> v1,<old>`), and a receiver accepts any that matches."""
    ts = int(time.time()) if timestamp is None else timestamp
    signatures = [sign(secret, msg_id, ts, body)]
    if previous_secret is not None and previous_secret != secret:
        signatures.append(sign(previous_secret, msg_id, ts, body))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signatures),
    }


def _text(raw: bytes) -> str:
    """The stored response body: UTF-8 with replacement, no NUL (Postgres text refuses it)."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "")


async def _read_head(response: httpx.Response, limit: int = WEBHOOK_RESPONSE_BODY_MAX_BYTES) -> bytes:
    """At most `limit` bytes of the body (the rest is never read: it may be huge)."""
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= limit:
            break
    return head[:limit]


async def attempt(
    client: httpx.AsyncClient,
    claim: Claim,
    secret: str,
    *,
    time_limit: float,
    previous_secret: str | None = None,
    timestamp: int | None = None,
) -> AttemptResult:
    """POST the payload once. Never raises for anything the endpoint or the network does. Up to
    4 KiB of the answer is kept for the delivery log (read within the same time limit)."""
    started_at = datetime.now(UTC)
    started = time.perf_counter()

    body: str | None = None

    def done(
        status_code: int | None = None, error: str | None = None, retry_after: float | None = None
    ) -> AttemptResult:
        return AttemptResult(
            started_at=started_at,
            latency_ms=int((time.perf_counter() - started) * 1000),
            status_code=status_code,
            error=error,
            retry_after=retry_after,
            response_body=body,
        )

    payload = claim.payload
    if claim.format == resend_format.RESEND:  # issue 21: Resend's shape, svix-* headers
        payload = resend_format.resend_body(payload)
    headers = signed_headers(
        secret=secret, msg_id=claim.event_id, body=payload, previous_secret=previous_secret, timestamp=timestamp
    )
    if claim.format == resend_format.RESEND:
        headers = resend_format.svix_headers(headers)
    try:
        async with asyncio.timeout(time_limit):
            request = client.build_request("POST", claim.url, content=payload, headers=headers)
            # The status decides; the first 4 KiB of the body are kept for the log, no more read.
            response = await client.send(request, stream=True)
            try:
                try:
                    body = _text(await _read_head(response))
                except httpx.HTTPError:
                    body = None  # the status line came: the attempt is judged by it
            finally:
                await response.aclose()
    except AddressNotAllowed:
        return done(error=ADDRESS_NOT_ALLOWED)
    except (TimeoutError, httpx.TimeoutException):
        return done(error="timeout")
    except httpx.ConnectError:
        return done(error="connect_error")
    except httpx.InvalidURL:
        return done(error="invalid_url")
    except httpx.HTTPError as exc:
        return done(error=f"http_error: {type(exc).__name__}")
    except OSError as exc:
        return done(error=f"network_error: {type(exc).__name__}")
    status = response.status_code
    if 200 <= status < 300:
        return done(status)
    return done(status, error=f"http_{status}", retry_after=parse_retry_after(response.headers.get("retry-after")))
