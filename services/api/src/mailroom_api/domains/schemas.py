"""Domain bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from mailroom_api.http.body import Request

# One DNS name (IDN allowed, the domains service checks the rest): no blanks or control characters.
DNS_CHARS = r"^[^\s\x00-\x1f\x7f-\x9f\u2028\u2029]+$"


class CreateDomain(Request, frozen=True, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=253, pattern=DNS_CHARS)]
    mail_from_subdomain: Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=DNS_CHARS)] = "bounce"
    track_opens: bool = False
    track_clicks: bool = False
    # SES region of the identity (one the operator allowed); absent = the platform's region.
    region: Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")] | None = None


class UpdateDomain(Request, frozen=True, kw_only=True):
    """Tracking defaults of the domain's sends (they select the SES configuration set); at least one."""

    track_opens: bool | None = None
    track_clicks: bool | None = None


class DomainRecord(msgspec.Struct, frozen=True, kw_only=True):
    purpose: str
    type: str
    name: str
    value: str
    priority: int | None
    required: bool
    status: str
    # What public DNS answered at the last check, why the record has its status, and when.
    found: list[str] = []
    detail: str | None = None
    last_checked_at: datetime | None = None


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


class DeletedDomain(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    deleted: bool = True
