"""Tenant bodies of the operator API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from mailroom_api.checks import MonthlyQuota, Name, RateLimit
from mailroom_api.http.body import Request
from mailroom_api.reputation.schemas import Reputation

TenantStatus = Literal["active", "paused", "blocked"]
StatusReason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
# Issue 22, the reputation guard: a tenant's own thresholds (fractions: 0.05 = 5 %) and minimum sends.
GuardRate = Annotated[float, msgspec.Meta(ge=0, le=1)]
GuardMinSends = Annotated[int, msgspec.Meta(ge=1, le=100_000)]


class CreateTenant(Request, frozen=True, kw_only=True):
    name: Name
    monthly_quota: MonthlyQuota | None = None
    rate_limit: RateLimit | None = None
    # Issue 23: the rate limit's burst (the bucket's size; None: the rate) and the trial's end.
    rate_burst: RateLimit | None = None
    trial_ends_at: datetime | None = None
    # Issue 22: the reputation guard's thresholds and minimum for this tenant (None: the server's).
    reputation_bounce_rate: GuardRate | None = None
    reputation_complaint_rate: GuardRate | None = None
    reputation_min_sends: GuardMinSends | None = None


class UpdateTenant(Request, frozen=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    status: TenantStatus | msgspec.UnsetType = msgspec.UNSET
    # Why (shown to the operator and in the tenant's 403); only with `status`, cleared when omitted.
    status_reason: StatusReason | msgspec.UnsetType | None = msgspec.UNSET
    monthly_quota: MonthlyQuota | msgspec.UnsetType | None = msgspec.UNSET
    rate_limit: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    # Issue 23 (null clears them): the burst, and when the trial ends (then sends are 402 trial_expired).
    rate_burst: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    trial_ends_at: datetime | msgspec.UnsetType | None = msgspec.UNSET
    # Issue 22 (null: back to the server's MAILROOM_API_REPUTATION_*).
    reputation_bounce_rate: GuardRate | msgspec.UnsetType | None = msgspec.UNSET
    reputation_complaint_rate: GuardRate | msgspec.UnsetType | None = msgspec.UNSET
    reputation_min_sends: GuardMinSends | msgspec.UnsetType | None = msgspec.UNSET


class TenantUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Issue 23: this UTC month's live recipients."""

    month: str  # "YYYY-MM"
    recipients_sent: int


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: TenantStatus
    monthly_quota: int | None
    rate_limit: int | None
    status_reason: str | None = None
    paused_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    # Issue 23
    rate_burst: int | None = None
    trial_ends_at: datetime | None = None
    usage: TenantUsage | None = None
    # Issue 22: the tenant's own guard settings (null: the server's) and its window now.
    reputation_bounce_rate: float | None = None
    reputation_complaint_rate: float | None = None
    reputation_min_sends: int | None = None
    reputation_since: datetime | None = None
    reputation: Reputation | None = None


class TenantList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Tenant]
