"""`GET /admin/v1/sending`'s answer."""

from __future__ import annotations

from datetime import datetime

import msgspec


class SendingStream(msgspec.Struct, frozen=True, kw_only=True):
    stream: str  # transactional | broadcast
    held: bool
    reason: str | None = None  # when held: daily_quota
    waiting: int  # emails of this stream in the sender's queue (paused tenants' not counted)


class SendingTenant(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    held: dict[str, int]  # reason (tenant_paused | queued) → emails


class SendQuota(msgspec.Struct, frozen=True, kw_only=True):
    max_send_rate: float | None  # SES MaxSendRate as last read; < 0 = unlimited
    max_24_hour_send: float | None  # SES Max24HourSend as last read; < 0 = unlimited
    sent_last_24_hours: float | None
    refreshed_at: datetime | None


class Sending(msgspec.Struct, frozen=True, kw_only=True):
    send_quota: SendQuota
    transactional_reserve: float | None  # share of the send rate kept for transactional mail
    broadcast_hold_share: float | None  # broadcast is held from this share of Max24HourSend
    streams: list[SendingStream]
    tenants: list[SendingTenant]  # most emails first, at most 100
