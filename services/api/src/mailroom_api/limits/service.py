"""The tenant's limits.

**Rate limit** (every tenant request; a batch costs one per item): a token bucket per tenant of
`rate_limit` tokens per second holding at most `rate_burst` (the tenant's, else the operator's
defaults, MAILROOM_API_DEFAULT_RATE_LIMIT / _BURST). The bucket is shared by every API process and
replica (a row of the UNLOGGED `rate_buckets`), and each process takes from it in *leases*: one
statement takes what the request costs plus up to `lease_size(rate)` spare tokens (1/20 of a
second's worth, at most 1,000), and the next requests of that tenant in this process spend the
spare ones without any I/O for up to `LEASE_SECONDS`. So a busy tenant's send costs a fraction of a
statement (none on the accept statement itself), and a slow tenant's limit is exact (a lease of 1).
A refusal is remembered locally until the bucket can have refilled, so a flood over the limit does
not cost a statement per request either.

**Monthly quota**: live recipients per UTC calendar month, counted and enforced by the accept
statement itself (emails/repository.py, `tenant_usage`); here the month arithmetic and the 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from mailroom_kit.db import Conn, Pool

from mailroom_api.auth.service import Principal
from mailroom_api.errors import ApiError
from mailroom_api.limits import repository as repo
from mailroom_api.limits.schemas import Usage

LEASE_SECONDS = 1.0  # leased tokens not spent by then are dropped (so they never add to a later burst)
MAX_LEASE = 1000


def lease_size(rate: int, burst: int) -> int:
    """Tokens a process takes at once: 1/20 of a second's worth, at least 1, at most 1,000 and a
    quarter of the burst (so two processes cannot lease a small bucket empty between them)."""
    return max(1, min(MAX_LEASE, math.ceil(rate / 20), burst // 4))


@dataclass(frozen=True)
class RateState:
    """What the RateLimit headers of one response say."""

    limit: int  # the burst: what Remaining counts down from
    remaining: int
    reset_seconds: int  # until the bucket is full again
    rate: int

    def headers(self, now: float | None = None) -> list[tuple[bytes, bytes]]:
        reset_at = math.ceil((time.time() if now is None else now) + self.reset_seconds)
        values = [
            ("ratelimit-limit", str(self.limit)),
            ("ratelimit-remaining", str(self.remaining)),
            ("ratelimit-reset", str(self.reset_seconds)),
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(self.remaining)),
            ("x-ratelimit-reset", str(reset_at)),  # seed 003: a Unix time
        ]
        return [(k.encode(), v.encode()) for k, v in values]


@dataclass
class _Lease:
    rate: int
    burst: int
    local: int = 0  # leased tokens not spent yet
    shared: float = 0.0  # the shared bucket after this process's last take
    at: float = 0.0  # monotonic time of that take
    refused_tokens: float | None = None  # the bucket at the last refusal, and when
    refused_at: float = 0.0
    # One lease statement at a time per tenant and process: concurrent requests wait for it and
    # then spend what it leased, instead of each leasing (and draining the shared bucket) at once.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _state(lease: _Lease) -> RateState:
    remaining = max(0, min(lease.burst, math.floor(max(lease.shared, 0.0)) + lease.local))
    missing = lease.burst - max(lease.shared, 0.0) - lease.local
    return RateState(
        limit=lease.burst,
        remaining=remaining,
        reset_seconds=max(0, math.ceil(missing / lease.rate)) if missing > 0 else 0,
        rate=lease.rate,
    )


def rate_limited(lease: _Lease, tokens: float, cost: int) -> ApiError:
    need = min(cost, lease.burst) - tokens
    retry_after = max(1, math.ceil(need / lease.rate))
    return ApiError(
        429,
        "rate_limited",
        f"rate limit exceeded ({lease.rate} requests per second, burst {lease.burst}); retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


MAX_TENANTS = 10_000  # bounds the memory of the process's leases; past it they start over


class RateLimiter:
    """One per API process: its leases of every tenant's shared bucket."""

    def __init__(self, *, default_rate: int, default_burst: int) -> None:
        self.default_rate = default_rate
        self.default_burst = default_burst
        self._leases: dict[str, _Lease] = {}

    def limits_of(self, principal: Principal) -> tuple[int, int]:
        """(rate, burst) of the caller's tenant: its own, else the defaults (a burst of 0: the rate)."""
        rate = principal.rate_limit or self.default_rate
        burst = principal.rate_burst or (self.default_burst if principal.rate_limit is None else 0) or rate
        return rate, burst

    async def take(self, pool: Pool, principal: Principal, cost: int = 1) -> RateState:
        """Spend `cost` tokens of the tenant's bucket: the state for the headers, or ApiError 429
        `rate_limited` (with Retry-After; the state is then on `.state` of the error)."""
        rate, burst = self.limits_of(principal)
        lease = self._leases.get(principal.tenant_id)
        if lease is None or (lease.rate, lease.burst) != (rate, burst):
            if len(self._leases) >= MAX_TENANTS:
                self._leases.clear()
            lease = self._leases[principal.tenant_id] = _Lease(rate=rate, burst=burst)
        spent = self._spend_local(lease, cost)
        if spent is not None:
            return spent
        async with lease.lock:
            spent = self._spend_local(lease, cost)  # what the lease we waited for brought
            if spent is not None:
                return spent
            return await self._lease(pool, principal, lease, cost)

    @staticmethod
    def _spend_local(lease: _Lease, cost: int) -> RateState | None:
        if time.monotonic() - lease.at >= LEASE_SECONDS:
            lease.local = 0
        if lease.local >= cost:
            lease.local -= cost
            return _state(lease)
        return None

    async def _lease(self, pool: Pool, principal: Principal, lease: _Lease, cost: int) -> RateState:
        rate, burst = lease.rate, lease.burst
        now = time.monotonic()
        if lease.refused_tokens is not None:
            # Others only take from the bucket: this is the most it can hold by now.
            at_most = lease.refused_tokens + (now - lease.refused_at) * rate + lease.local
            if at_most < min(cost, burst):
                raise _refusal(lease, at_most - lease.local, cost)
        from_local = lease.local
        lease.local = 0
        need = cost - from_local
        async with pool.connection() as conn:
            took = await repo.take_tokens(
                conn, principal.tenant_id, rate=rate, burst=burst, cost=need, spare=lease_size(rate, burst) - 1
            )
        now = time.monotonic()
        if took.granted == 0:
            lease.local += from_local
            lease.refused_tokens, lease.refused_at = took.tokens, now
            lease.shared = took.tokens
            raise _refusal(lease, took.tokens, need)
        lease.refused_tokens = None
        lease.local += took.granted - need
        lease.shared, lease.at = took.tokens, now
        return _state(lease)


class RateLimitedError(ApiError):
    """429 `rate_limited`, carrying the state its RateLimit headers report."""

    def __init__(self, error: ApiError, state: RateState) -> None:
        super().__init__(error.status, error.code, error.message, headers=error.headers)
        self.state = state


def _refusal(lease: _Lease, tokens: float, cost: int) -> RateLimitedError:
    state = _state(_Lease(rate=lease.rate, burst=lease.burst, shared=tokens))
    return RateLimitedError(rate_limited(lease, tokens, cost), state)


# ----------------------------------------------------------------------------- monthly quota


def month_of(at: datetime) -> date:
    """The UTC calendar month of `at`, as its first day."""
    at = at.astimezone(UTC)
    return date(at.year, at.month, 1)


def next_month(month: date) -> datetime:
    """When the month starting on `month` ends (the next month's first instant, UTC)."""
    if month.month == 12:
        return datetime(month.year + 1, 1, 1, tzinfo=UTC)
    return datetime(month.year, month.month + 1, 1, tzinfo=UTC)


def quota_exceeded(quota: int, at: datetime) -> ApiError:
    resets_at = next_month(month_of(at))
    reset = resets_at.isoformat().replace("+00:00", "Z")
    retry_after = max(1, math.ceil((resets_at - at).total_seconds()))
    return ApiError(
        429,
        "quota_exceeded",
        f"the monthly quota of {quota} recipients is used up; it resets at {reset}",
        headers={"Retry-After": str(retry_after)},
    )


async def get_usage(conn: Conn, principal: Principal, limiter: RateLimiter) -> Usage:
    now = datetime.now(UTC)
    month = month_of(now)
    used = (await repo.month_usage(conn, [principal.tenant_id], month)).get(principal.tenant_id, 0)
    quota = principal.monthly_quota
    rate, burst = limiter.limits_of(principal)
    return Usage(
        month=month.strftime("%Y-%m"),
        period_start=datetime(month.year, month.month, 1, tzinfo=UTC),
        resets_at=next_month(month),
        recipients_sent=used,
        monthly_quota=quota,
        remaining=None if quota is None else max(0, quota - used),
        rate_limit=rate,
        rate_burst=burst,
    )


async def month_usage_of(conn: Conn, tenant_ids: list[str]) -> tuple[str, dict[str, int]]:
    """This month ("YYYY-MM") and the live recipients each tenant of `tenant_ids` sent in it."""
    month = month_of(datetime.now(UTC))
    return month.strftime("%Y-%m"), await repo.month_usage(conn, tenant_ids, month)
