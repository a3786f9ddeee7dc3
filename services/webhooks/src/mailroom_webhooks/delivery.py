"""One delivery attempt over HTTP: sign, POST through the pinned client, classify the answer."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

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


def signed_headers(*, secret: str, msg_id: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


async def attempt(client: httpx.AsyncClient, claim: Claim, secret: str, *, time_limit: float) -> AttemptResult:
    """POST the payload once. Never raises for anything the endpoint or the network does."""
    started_at = datetime.now(UTC)
    started = time.perf_counter()

    def done(
        status_code: int | None = None, error: str | None = None, retry_after: float | None = None
    ) -> AttemptResult:
        return AttemptResult(
            started_at=started_at,
            latency_ms=int((time.perf_counter() - started) * 1000),
            status_code=status_code,
            error=error,
            retry_after=retry_after,
        )

    headers = signed_headers(secret=secret, msg_id=claim.event_id, body=claim.payload)
    try:
        async with asyncio.timeout(time_limit):
            request = client.build_request("POST", claim.url, content=claim.payload, headers=headers)
            # Only the status line and headers matter: the body is never read (it may be huge).
            response = await client.send(request, stream=True)
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
