"""The reputation guard's arithmetic (issue 22), no I/O: a tenant's effective thresholds (its own,
else the server's), where its window starts, and whether its figures trip the guard or warn.

A rate trips only when it is strictly over its threshold, compared exactly (as fractions: 10 hard
bounces of 200 sends is 5 %, not over a 0.05 threshold; 11 of 200 is)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


@dataclass(frozen=True)
class ReputationDefaults:
    """The server's settings (MAILROOM_API_REPUTATION_*; see settings.py)."""

    enabled: bool = True
    bounce_rate: float = 0.05
    complaint_rate: float = 0.001
    window_sends: int = 1000
    window_days: float = 7.0
    min_sends: int = 200
    warn_ratio: float = 0.5


@dataclass(frozen=True)
class Policy:
    """One tenant's effective guard: the thresholds and minimum it is held to, and its window."""

    enabled: bool
    bounce_rate: float
    complaint_rate: float
    min_sends: int
    window_sends: int
    window_start: datetime
    warn_ratio: float


def policy_of(
    defaults: ReputationDefaults,
    *,
    bounce_rate: float | None,
    complaint_rate: float | None,
    min_sends: int | None,
    since: datetime | None,
    now: datetime,
) -> Policy:
    """The tenant's own settings over the server's. The window is its last `window_sends` live sends
    accepted after the later of `window_days` ago and `since` (its last resume)."""
    start = now - timedelta(days=defaults.window_days)
    return Policy(
        enabled=defaults.enabled,
        bounce_rate=defaults.bounce_rate if bounce_rate is None else bounce_rate,
        complaint_rate=defaults.complaint_rate if complaint_rate is None else complaint_rate,
        min_sends=defaults.min_sends if min_sends is None else min_sends,
        window_sends=defaults.window_sends,
        window_start=start if since is None else max(start, since),
        warn_ratio=defaults.warn_ratio,
    )


def _exact(value: float) -> Fraction:
    """The decimal the setting was written as (0.001, not the binary double nearest to it)."""
    return Fraction(repr(value))


def over(count: int, sends: int, threshold: float, ratio: float = 1.0) -> bool:
    """count / sends > threshold * ratio, exactly (False with no sends)."""
    return sends > 0 and Fraction(count, sends) > _exact(threshold) * _exact(ratio)


@dataclass(frozen=True)
class Verdict:
    tripped: bool  # the window holds at least min_sends and a rate is over its threshold
    warn: bool  # a rate is over warn_ratio * its threshold (whatever the window holds)
    reason: str | None  # why it trips, with the figures (None unless tripped)


def _percent(value: Fraction | float) -> str:
    return f"{float(value) * 100:.4g}%"


def judge(policy: Policy, *, sends: int, hard_bounces: int, complaints: int) -> Verdict:
    bounce_over = over(hard_bounces, sends, policy.bounce_rate)
    complaint_over = over(complaints, sends, policy.complaint_rate)
    warn = over(hard_bounces, sends, policy.bounce_rate, policy.warn_ratio) or over(
        complaints, sends, policy.complaint_rate, policy.warn_ratio
    )
    if sends < policy.min_sends or not (bounce_over or complaint_over):
        return Verdict(tripped=False, warn=warn, reason=None)
    causes = []
    if bounce_over:
        causes.append(
            f"hard-bounce rate {_percent(Fraction(hard_bounces, sends))} ({hard_bounces} of {sends} live sends)"
            f" is over {_percent(policy.bounce_rate)}"
        )
    if complaint_over:
        causes.append(
            f"complaint rate {_percent(Fraction(complaints, sends))} ({complaints} of {sends} live sends)"
            f" is over {_percent(policy.complaint_rate)}"
        )
    reason = "paused by the reputation guard: " + " and ".join(causes)
    return Verdict(tripped=True, warn=warn, reason=reason)


def id_floor(prefix: str, moment: datetime) -> str:
    """The smallest id `mailroom_kit.ids.new_id(prefix)` makes at `moment` (its first 10 characters
    are the millisecond time): `id >= id_floor(...)` is a range of the (tenant, mode, id) index."""
    value = int(moment.timestamp() * 1000) << 80
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
