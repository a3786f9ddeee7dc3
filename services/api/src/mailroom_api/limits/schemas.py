"""The usage body (`GET /v1/usage`)."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    month: str  # "YYYY-MM", UTC
    period_start: datetime
    resets_at: datetime  # the quota's reset: the next month's first instant, UTC
    # Live recipients accepted this month (test mode and suppressed recipients count against nothing).
    recipients_sent: int
    monthly_quota: int | None  # None: no quota
    remaining: int | None
    rate_limit: int  # requests (batch items) per second, the tenant's or the server's default
    rate_burst: int  # the bucket's size: RateLimit-Limit
