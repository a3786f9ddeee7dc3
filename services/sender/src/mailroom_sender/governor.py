"""The SES send-rate governor (issue 23): every sender replica together stays under the account's
`MaxSendRate`, transactional mail keeps priority over broadcast, and mail is held (not failed)
as the day's sends near `Max24HourSend`.

**Shared state: one Postgres row** (`sender.send_governor`), not NATS KV. Every live send already
costs the sender a few statements on Postgres; the token bucket is one more, atomic under the row
lock and computed on the *database's* clock, so replicas with skewed clocks cannot over-grant.
NATS KV would need a compare-and-swap retry loop per token and each client's own clock. No new
component: the sender's schema has it (migration 0005).

**The bucket.** From `T = MaxSendRate x send_rate_share` (default 80%, room for network jitter
between our clock and SES's): capacity `C = max(2, ⌊T/10⌋)` and refill `r = T - C` when T ≥ 3,
else `C = 1`, `r = T`. Any one-second window then holds at most ⌊C + r⌋ ≤ T grants (a token
bucket admits C + r·w in a window of w seconds), so SES never sees more than MaxSendRate.

**Transactional reserve.** Broadcast takes a token only while the bucket holds at least
`1 + reserve x C` (default reserve 50%); transactional takes one whenever one is there. A
broadcast backlog alone still gets the full rate (it drains the bucket down to the reserve and
then the refill), and a transactional email arriving in the middle finds the reserve waiting for
it: a broadcast backlog never delays a password reset. (Below T = 3/s the bucket holds one token
and there is no reserve to keep.)

**Daily quota.** The row keeps SES's `SentLast24Hours` (refreshed with the quota) plus the tokens
granted since, by all replicas. Broadcast is held from `daily_hold_share` (default 95%) of
`Max24HourSend`, transactional only at 100%. A held email goes to the sender's queue
(held.py, due again after `daily_hold_recheck_seconds`) and the gauge
`mailroom_sender_daily_quota_holding{stream}` is 1.

**Refresh.** Each replica calls `GetAccount` at start and every `send_quota_refresh_seconds` and
writes the quota into the row (all replicas agree; a replica without the `ses:GetAccount`
permission keeps the row's last values, the SES sandbox quota of 1/s and 200/day at first).

**Leases (issue 15).** A token statement per send cost the sender a round trip per email. A
replica now takes up to `lease_max_tokens` tokens in one statement (as many as the bucket holds
above the stream's reserve, and at most `r x lease` of them) and spends them locally until the
lease ends, `lease` = min(`lease_max_seconds`, (MaxSendRate - C - r) / 2r) after the statement
was *sent* (so never later than that after the database granted them). Any one-second window of
sends then comes from grants of a window of 1 + lease seconds: at most C + r x (1 + lease), half-way
between T and MaxSendRate, across every replica: leases use half the jitter room, never more (at
the default share of 90%: windows up to 95% of MaxSendRate, a lease at most 5% of MaxSendRate
in tokens and about 0.06 s long; below a MaxSendRate of 40/s a lease is a single token). Tokens
left when a lease ends are dropped, never returned or carried (the day's count keeps them: a few
over-counted sends until the next refresh, on the safe side). With a share so high that there is
no jitter room, every statement grants one token for one send, as before.

Test mode never takes a token. SES throttling still happens (another app on the account, a lower
quota than reported): `TooManyRequestsException` is transient, retried with backoff, never a failure.

Leases are on (`lease_max_tokens` 64; 1 turns them off). They were off for a while after two sender
processes at MaxSendRate 50 once put 53 sends into one second of the emulator's log
(test_governor_processes); the same was then seen with leases off: the emulator records its receipt
times when its event loop gets to them, and bunches them when that loop stalls on a loaded machine.
The test now runs its senders at a 60 % share (windows of at most 37 by the bound above), leases on.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Literal

from mailroom_contracts.events import Stream
from mailroom_kit.db import Pool
from mailroom_kit.logging import get_logger
from mailroom_kit.wake import sleep_until_stopped
from prometheus_client import Counter, Gauge, Histogram

from mailroom_sender import repository
from mailroom_sender.providers import SesProvider

log = get_logger(__name__)

SEND_QUOTA = Gauge(
    "mailroom_sender_send_quota",
    "SES SendQuota as GetAccount last reported it (max_send_rate, max_24_hour_send) and sent_24h",
    ["field"],
)
DAILY_QUOTA_HOLDING = Gauge(
    "mailroom_sender_daily_quota_holding",
    "1 while emails of the stream are held because the day's sends are near Max24HourSend",
    ["stream"],
)
GOVERNOR_WAIT_SECONDS = Histogram(
    "mailroom_sender_governor_wait_seconds",
    "Time a live send waited for a send-rate token",
    ["stream"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
GOVERNOR_HELD = Counter(
    "mailroom_sender_governor_held_total",
    "Live sends the governor held (daily quota near, or no token in time) instead of sending",
    ["stream", "reason"],
)

Verdict = Literal["granted", "daily_quota", "no_token"]


def bucket_shape(max_send_rate: float, share: float) -> tuple[float, float]:
    """(refill rate, capacity) such that no one-second window holds more than share x MaxSendRate."""
    target = max(max_send_rate, 0.0) * share
    if target >= 3:
        capacity = float(max(2, math.floor(target / 10)))
        return target - capacity, capacity
    return max(target, 0.01), 1.0


class SendGovernor:
    def __init__(
        self,
        pool: Pool,
        ses: SesProvider | None,
        *,
        send_rate_share: float = 0.8,
        transactional_reserve: float = 0.5,
        daily_hold_share: float = 0.95,
        refresh_seconds: float = 60.0,
        max_wait_seconds: float = 30.0,
        lease_max_tokens: int = 64,  # at most r x lease are granted (the statement bounds it)
        lease_max_seconds: float = 0.25,
    ) -> None:
        self._pool = pool
        self._ses = ses
        self._share = send_rate_share
        self._reserve = transactional_reserve
        self._daily_hold = daily_hold_share
        self._refresh = refresh_seconds
        self._max_wait = max_wait_seconds
        # One waiter per stream per replica asks Postgres; the others queue behind it here.
        self._locks: dict[str, asyncio.Lock] = {}
        # issue 15: per stream, the tokens of the current lease not spent yet and when it ends
        # (time.monotonic()).
        self._lease_max_tokens = lease_max_tokens
        self._lease_max_seconds = lease_max_seconds
        self._leases: dict[str, tuple[int, float]] = {}
        self.refreshed = asyncio.Event()

    async def refresh(self) -> bool:
        """GetAccount → the shared row. False (logged) when SES did not answer."""
        if self._ses is None:
            return False
        try:
            quota = await self._ses.send_quota()
        except Exception as exc:
            log.warning("governor.get_account_failed", error=repr(exc))
            return False
        max_rate = float(quota.get("MaxSendRate", 1.0))
        rate, capacity = bucket_shape(max_rate, self._share)
        async with self._pool.connection() as conn, conn.transaction():
            await repository.refresh_quota(
                conn,
                max_send_rate=max_rate,
                max_24_hour_send=float(quota.get("Max24HourSend", -1.0)),
                sent_last_24_hours=float(quota.get("SentLast24Hours", 0.0)),
                rate=rate,
                capacity=capacity,
            )
        log.info("governor.quota", max_send_rate=max_rate, max_24_hour_send=quota.get("Max24HourSend"), rate=rate)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh the quota at start and every `refresh_seconds`; keep the gauges current."""
        while not stop.is_set():
            await self.refresh()
            self.refreshed.set()
            try:
                async with self._pool.connection() as conn:
                    q = await repository.quota(conn)
                SEND_QUOTA.labels(field="max_send_rate").set(q.max_send_rate)
                SEND_QUOTA.labels(field="max_24_hour_send").set(q.max_24_hour_send)
                SEND_QUOTA.labels(field="sent_24h").set(q.sent_24h)
                for stream, share in (("transactional", 1.0), ("broadcast", self._daily_hold)):
                    holding = 0 <= q.max_24_hour_send <= q.sent_24h / share if share > 0 else False
                    DAILY_QUOTA_HOLDING.labels(stream=stream).set(1 if holding else 0)
            except Exception as exc:
                log.warning("governor.gauges_failed", error=repr(exc))
            if await sleep_until_stopped(stop, self._refresh):
                return

    async def acquire(self, stream: Stream) -> Verdict:
        """Wait for a token for one live send of `stream`. `daily_quota`: hold the email, the day's
        sends are near Max24HourSend; `no_token`: none came within `max_wait_seconds` (hold it
        briefly rather than keep the attempt open)."""
        reserve = self._reserve if stream == "broadcast" else 0.0
        daily = self._daily_hold if stream == "broadcast" else 1.0
        started = time.monotonic()
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            while True:
                left, ends = self._leases.get(stream, (0, 0.0))
                if left > 0 and time.monotonic() < ends:
                    self._leases[stream] = (left - 1, ends)
                    GOVERNOR_WAIT_SECONDS.labels(stream=stream).observe(time.monotonic() - started)
                    return "granted"
                asked = time.monotonic()
                async with self._pool.connection() as conn:
                    token = await repository.take_token(
                        conn,
                        reserve=reserve,
                        daily_share=daily,
                        max_tokens=self._lease_max_tokens,
                        max_lease_seconds=self._lease_max_seconds,
                    )
                if token.granted:
                    self._leases[stream] = (token.count - 1, asked + token.lease_seconds)
                    GOVERNOR_WAIT_SECONDS.labels(stream=stream).observe(time.monotonic() - started)
                    return "granted"
                if token.daily_exhausted:
                    DAILY_QUOTA_HOLDING.labels(stream=stream).set(1)
                    GOVERNOR_HELD.labels(stream=stream, reason="daily_quota").inc()
                    return "daily_quota"
                wait = max((token.needed - token.available) / max(token.rate, 0.01), 0.001)
                if time.monotonic() + wait - started > self._max_wait:
                    GOVERNOR_HELD.labels(stream=stream, reason="no_token").inc()
                    return "no_token"
                await asyncio.sleep(wait)
