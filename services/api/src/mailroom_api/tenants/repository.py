"""Every SQL statement on `tenants`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one


class TenantRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: str
    monthly_quota: int | None
    rate_limit: int | None
    status_reason: str | None
    paused_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # Issue 23 (migration 0013)
    rate_burst: int | None = None
    trial_ends_at: datetime | None = None
    # Issue 22, the reputation guard (migration 0017): the operator's own thresholds for the tenant
    # (None: the server's) and when its window starts (its last return to active).
    reputation_bounce_rate: float | None = None
    reputation_complaint_rate: float | None = None
    reputation_min_sends: int | None = None
    reputation_since: datetime | None = None


COLUMNS = columns(TenantRow)
UPDATABLE = (
    frozenset({"name", "status", "monthly_quota", "rate_limit"})
    | {"rate_burst", "trial_ends_at"}
    | {"reputation_bounce_rate", "reputation_complaint_rate", "reputation_min_sends"}  # issue 22
)


async def insert_tenant(
    conn: Conn,
    *,
    tenant_id: str,
    name: str,
    monthly_quota: int | None,
    rate_limit: int | None,
    rate_burst: int | None = None,
    trial_ends_at: datetime | None = None,
    reputation_bounce_rate: float | None = None,
    reputation_complaint_rate: float | None = None,
    reputation_min_sends: int | None = None,
) -> TenantRow:
    row = await fetch_one(
        conn,
        TenantRow,
        "INSERT INTO tenants (id, name, monthly_quota, rate_limit, rate_burst, trial_ends_at,"
        " reputation_bounce_rate, reputation_complaint_rate, reputation_min_sends)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
        (
            tenant_id,
            name,
            monthly_quota,
            rate_limit,
            rate_burst,
            trial_ends_at,
            reputation_bounce_rate,
            reputation_complaint_rate,
            reputation_min_sends,
        ),
    )
    assert row is not None
    return row


async def get_tenant(conn: Conn, tenant_id: str) -> TenantRow | None:
    return await fetch_one(conn, TenantRow, f"SELECT {COLUMNS} FROM tenants WHERE id = %s", (tenant_id,))


async def list_tenants(conn: Conn) -> list[TenantRow]:
    return await fetch_all(conn, TenantRow, f"SELECT {COLUMNS} FROM tenants ORDER BY id")


async def list_not_active(conn: Conn) -> list[TenantRow]:
    """Paused and blocked tenants (issue 23: their state is re-published, tenants/republish.py)."""
    return await fetch_all(conn, TenantRow, f"SELECT {COLUMNS} FROM tenants WHERE status <> 'active' ORDER BY id")


async def update_tenant(conn: Conn, tenant_id: str, changes: dict[str, Any]) -> TenantRow | None:
    """Apply `changes` to the allow-listed columns (other keys are ignored, never injected)."""
    cols = [c for c in changes if c in UPDATABLE]
    assignments = ", ".join(f"{c} = %s" for c in cols)
    sets = f"{assignments}, updated_at = now()" if cols else "updated_at = updated_at"
    return await fetch_one(
        conn,
        TenantRow,
        f"UPDATE tenants SET {sets} WHERE id = %s RETURNING {COLUMNS}",  # columns come from the allow-list
        (*[changes[c] for c in cols], tenant_id),
    )


async def set_status(
    conn: Conn, tenant_id: str, *, status: str, reason: str | None, only_from: str | None = None
) -> TenantRow | None:
    """Set the status and its reason; `paused_at` is when the tenant became paused (kept while it
    stays paused, cleared otherwise), and `reputation_since` is set when it becomes active from
    another status (the reputation guard's window starts again: issue 22). With `only_from`, only
    a tenant in that status changes (None otherwise: the row lock makes it exact under races)."""
    return await fetch_one(
        conn,
        TenantRow,
        "UPDATE tenants SET status = %(status)s, status_reason = %(reason)s, "
        "paused_at = CASE WHEN %(status)s = 'paused' "
        "THEN COALESCE(CASE WHEN status = 'paused' THEN paused_at END, now()) END, "
        "reputation_since = CASE WHEN %(status)s = 'active' AND status <> 'active' THEN clock_timestamp() "
        "ELSE reputation_since END, "
        f"updated_at = now() WHERE id = %(id)s AND (%(from)s::text IS NULL OR status = %(from)s::text) "
        f"RETURNING {COLUMNS}",
        {"status": status, "reason": reason, "id": tenant_id, "from": only_from},
    )
