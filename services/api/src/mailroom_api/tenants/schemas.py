"""Tenant bodies of the operator API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from mailroom_api.checks import MonthlyQuota, Name, RateLimit
from mailroom_api.http.body import Request

TenantStatus = Literal["active", "paused", "blocked"]


class CreateTenant(Request, frozen=True, kw_only=True):
    name: Name
    monthly_quota: MonthlyQuota | None = None
    rate_limit: RateLimit | None = None


class UpdateTenant(Request, frozen=True, kw_only=True):
    name: Name | msgspec.UnsetType = msgspec.UNSET
    status: TenantStatus | msgspec.UnsetType = msgspec.UNSET
    monthly_quota: MonthlyQuota | msgspec.UnsetType | None = msgspec.UNSET
    rate_limit: RateLimit | msgspec.UnsetType | None = msgspec.UNSET


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: TenantStatus
    monthly_quota: int | None
    rate_limit: int | None
    created_at: datetime
    updated_at: datetime


class TenantList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Tenant]
