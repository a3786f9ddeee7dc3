"""What the operator API shows of a tenant's reputation window."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Reputation(msgspec.Struct, frozen=True, kw_only=True):
    """The tenant's window now: its size (`window_sends` at most, none accepted before
    `window_start`), what it holds, the rates (null with no sends), the thresholds it is held to,
    and `warn` (a rate over `warn_ratio` * its threshold). `over_threshold`: the window holds
    `min_sends` and a rate is over its threshold (what pauses an active tenant while `guard` is on)."""

    guard: bool
    window_sends: int
    window_days: float
    window_start: datetime
    min_sends: int
    sends: int
    hard_bounces: int
    complaints: int
    bounce_rate: float | None
    complaint_rate: float | None
    bounce_rate_threshold: float
    complaint_rate_threshold: float
    warn_ratio: float
    warn: bool
    over_threshold: bool
