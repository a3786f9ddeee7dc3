"""Resend's cursor pagination (`limit`, `after`, `before` → `has_more`) over a short list held in
memory (a tenant's webhooks, its API keys)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar.params import QueryParameter

from mailroom_api.errors import validation

MAX_PAGE = 100
# The query parameters of a list paged in memory (every item when `limit` is left out).
PageLimit = Annotated[int | None, QueryParameter(ge=1, le=MAX_PAGE, description="page size")]
PageAfter = Annotated[str | None, QueryParameter(description="id after which the page starts")]
PageBefore = Annotated[str | None, QueryParameter(description="id before which the page ends")]


def page(items: list[Any], *, limit: int | None, after: str | None, before: str | None) -> tuple[list[Any], bool]:
    """Resend's cursor pagination over a list ordered newest first: `after` an id → the items
    after it; `before` → the items before it (both excluded); `limit` 1..100 (default all)."""
    if after is not None and before is not None:
        raise validation("after and before cannot be used together", "after")
    ids = [item.id for item in items]
    if after is not None:
        if after not in ids:
            raise validation("after names no item of this list", "after")
        items = items[ids.index(after) + 1 :]
    elif before is not None:
        if before not in ids:
            raise validation("before names no item of this list", "before")
        items = items[: ids.index(before)]
        if limit is not None and len(items) > limit:
            return items[-limit:], True
        return items, False
    if limit is not None and len(items) > limit:
        return items[:limit], True
    return items, False
