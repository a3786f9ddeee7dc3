"""Every SQL statement on `suppressions` (only the unsubscribe write in this version)."""

from __future__ import annotations

from mailroom_kit.db import Conn


async def add_suppression(
    conn: Conn, *, tenant_id: str, mode: str, email: str, reason: str, source_email_id: str | None
) -> bool | None:
    """Suppress `email` for the tenant's `mode`, once (a second time keeps the first row).
    True: recorded now; False: it already was; None: no such tenant (nothing written)."""
    cur = await conn.execute(
        """
        WITH tenant AS (SELECT id FROM tenants WHERE id = %(tenant_id)s), added AS (
            INSERT INTO suppressions (tenant_id, mode, email, reason, source_email_id)
            SELECT tenant.id, %(mode)s, %(email)s, %(reason)s, %(source_email_id)s FROM tenant
            ON CONFLICT (tenant_id, mode, email) DO NOTHING
            RETURNING 1
        )
        SELECT EXISTS (SELECT 1 FROM tenant) AS tenant_exists, EXISTS (SELECT 1 FROM added) AS added
        """,
        {"tenant_id": tenant_id, "mode": mode, "email": email, "reason": reason, "source_email_id": source_email_id},
    )
    row = await cur.fetchone()
    assert row is not None
    if not row["tenant_exists"]:
        return None
    return bool(row["added"])
