"""Suppression list bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from mailroom_api.http.body import Request

REASONS = ("bounce", "complaint", "unsubscribe", "manual")


class CreateSuppression(Request, frozen=True, kw_only=True):
    """`POST /v1/suppressions`: an address added by hand (only `manual` can be given)."""

    email: Annotated[str, msgspec.Meta(min_length=1, max_length=998)]
    reason: Literal["manual"] = "manual"


class Suppression(msgspec.Struct, frozen=True, kw_only=True):
    email: str  # the normalised bare address (lower-cased)
    reason: Literal["bounce", "complaint", "unsubscribe", "manual"]
    source_email_id: str | None  # the msg_… that led to it (bounce, complaint, unsubscribe), if any
    created_at: datetime


class SuppressionList(msgspec.Struct, frozen=True, kw_only=True):
    data: list[Suppression]
    next_cursor: str | None
