"""Domain bodies."""

from __future__ import annotations

from datetime import datetime

import msgspec

from mailroom_api.http.body import Request


class CreateDomain(Request, frozen=True, kw_only=True):
    name: str
    mail_from_subdomain: str = "bounce"
    track_opens: bool = False
    track_clicks: bool = False


class DomainRecord(msgspec.Struct, frozen=True, kw_only=True):
    purpose: str
    type: str
    name: str
    value: str
    priority: int | None
    required: bool
    status: str


class Domain(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: str
    region: str
    records: list[DomainRecord]
    mail_from_domain: str
    track_opens: bool
    track_clicks: bool
    created_at: datetime
    last_checked_at: datetime | None


class DomainList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Domain]
