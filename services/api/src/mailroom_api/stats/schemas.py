"""Stats bodies (`GET /v1/stats`)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class Bucket(msgspec.Struct, frozen=True, kw_only=True):
    """One UTC hour or day (`start`), or the totals of the range. Recipients unless noted."""

    start: datetime
    sent: int
    delivered: int
    delivery_delayed: int
    bounced: int  # bounced_hard + bounced_soft
    bounced_hard: int  # Permanent bounces
    bounced_soft: int  # Transient and Undetermined bounces
    complained: int
    opened: int  # open events
    opened_unique: int  # emails opened for the first time
    clicked: int  # click events
    clicked_unique: int  # emails clicked for the first time
    failed: int  # emails
    suppressed: int  # recipients dropped at send because they were suppressed
    unsubscribed: int
    bounce_rate: float | None  # bounced_hard / sent (null when nothing was sent)
    complaint_rate: float | None  # complained / sent


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    granularity: Literal["hour", "day"]
    mode: Literal["live", "test"]  # the calling key's: test and live traffic are counted apart
    domain: str | None
    tag: str | None
    totals: Bucket
    data: list[Bucket]
