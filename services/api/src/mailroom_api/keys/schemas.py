"""API key bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from mailroom_api.checks import DomainId, Name
from mailroom_api.http.body import Request

Mode = Literal["live", "test"]
Permission = Literal["full_access", "sending_access"]


class CreateApiKey(Request, frozen=True, kw_only=True):
    name: Name
    mode: Mode = "live"
    permission: Permission = "full_access"
    domain_id: DomainId | None = None


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    mode: Mode
    permission: Permission
    domain_id: str | None
    prefix: str
    last4: str
    created_at: datetime
    revoked_at: datetime | None


class CreatedApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    mode: Mode
    permission: Permission
    domain_id: str | None
    prefix: str
    last4: str
    created_at: datetime
    token: str  # shown once


class ApiKeyList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[ApiKey]
