"""Every SQL statement of the suppression list API on `suppressions` (the one-click unsubscribe
write stays in unsubscribe/repository.py)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one


class SuppressionRow(msgspec.Struct, frozen=True, kw_only=True):
    email: str
    reason: str
    source_email_id: str | None
    created_at: datetime


COLUMNS = columns(SuppressionRow)


async def list_suppressions(
    conn: Conn,
    *,
    tenant_id: str,
    mode: str,
    limit: int,
    after_email: str | None,
    reason: str | None,
    email: str | None,
    before_email: str | None = None,
) -> list[SuppressionRow]:
    """Up to `limit` entries of the tenant's `mode`, by address: the first ones after `after_email`,
    or the last ones before `before_email` (keyset either way; by address in both cases)."""
    rows = await fetch_all(
        conn,
        SuppressionRow,
        f"""
        SELECT {COLUMNS} FROM suppressions
        WHERE tenant_id = %(tenant_id)s AND mode = %(mode)s
            AND (%(after)s::text IS NULL OR email > %(after)s::text)
            AND (%(before)s::text IS NULL OR email < %(before)s::text)
            AND (%(reason)s::text IS NULL OR reason = %(reason)s::text)
            AND (%(email)s::text IS NULL OR email = %(email)s::text)
        ORDER BY email {"DESC" if before_email is not None else "ASC"}
        LIMIT %(limit)s
        """,
        {
            "tenant_id": tenant_id,
            "mode": mode,
            "after": after_email,
            "before": before_email,
            "reason": reason,
            "email": email,
            "limit": limit,
        },
    )
    return rows[::-1] if before_email is not None else rows


async def add_manual(conn: Conn, *, tenant_id: str, mode: str, email: str) -> tuple[SuppressionRow, bool]:
    """Suppress `email` (reason `manual`) unless it already is; (the entry as kept, added now).
    One statement: an existing entry keeps its reason and time."""
    row = None
    for _ in range(2):  # a concurrent insert committed after this statement's snapshot: once more
        row = await fetch_one(conn, _Added, _ADD_MANUAL, {"tenant_id": tenant_id, "mode": mode, "email": email})
        if row is not None:
            break
    assert row is not None
    entry = SuppressionRow(
        email=row.email, reason=row.reason, source_email_id=row.source_email_id, created_at=row.created_at
    )
    return entry, row.added


_ADD_MANUAL = f"""
        WITH added AS (
            INSERT INTO suppressions (tenant_id, mode, email, reason)
            VALUES (%(tenant_id)s, %(mode)s, %(email)s, 'manual')
            ON CONFLICT (tenant_id, mode, email) DO NOTHING
            RETURNING {COLUMNS}
        )
        SELECT {COLUMNS}, true AS added FROM added
        UNION ALL
        SELECT {COLUMNS}, false AS added FROM suppressions
        WHERE tenant_id = %(tenant_id)s AND mode = %(mode)s AND email = %(email)s
            AND NOT EXISTS (SELECT 1 FROM added)
"""


class _Added(SuppressionRow, frozen=True, kw_only=True):
    added: bool


async def delete_suppression(conn: Conn, *, tenant_id: str, mode: str, email: str) -> bool:
    """Remove the tenant's `mode` entry of `email`; False: there was none."""
    cur = await conn.execute(
        "DELETE FROM suppressions WHERE tenant_id = %(tenant_id)s AND mode = %(mode)s AND email = %(email)s",
        {"tenant_id": tenant_id, "mode": mode, "email": email},
    )
    return cur.rowcount > 0
