"""Every SQL statement on the tenant's settings (columns of `tenants`)."""

from __future__ import annotations

import msgspec
from mailroom_kit.db import Conn, fetch_one


class SettingsRow(msgspec.Struct, frozen=True, kw_only=True):
    default_from: str | None


async def get_settings(conn: Conn, tenant_id: str) -> SettingsRow | None:
    return await fetch_one(conn, SettingsRow, "SELECT default_from FROM tenants WHERE id = %s", (tenant_id,))


async def set_default_from(conn: Conn, tenant_id: str, default_from: str | None) -> SettingsRow | None:
    return await fetch_one(
        conn,
        SettingsRow,
        "UPDATE tenants SET default_from = %s, updated_at = now() WHERE id = %s RETURNING default_from",
        (default_from, tenant_id),
    )


async def domain_allowed(
    conn: Conn, *, tenant_id: str, domain: str, key_domain_id: str | None, needs_verified: bool
) -> tuple[bool, bool]:
    """(allowed for a key limited to `key_domain_id`, verified if `needs_verified`): the checks a
    send makes of its from-domain (emails/repository.accept_email), for a default sender."""
    cur = await conn.execute(
        """
        SELECT
            (%(key_domain_id)s::text IS NULL OR EXISTS (
                SELECT 1 FROM domains WHERE tenant_id = %(tenant_id)s AND id = %(key_domain_id)s
                  AND lower(name) = %(domain)s)) AS allowed,
            (NOT %(needs_verified)s::boolean OR EXISTS (
                SELECT 1 FROM domains WHERE tenant_id = %(tenant_id)s AND lower(name) = %(domain)s
                  AND status = 'verified')) AS verified
        """,
        {"tenant_id": tenant_id, "domain": domain, "key_domain_id": key_domain_id, "needs_verified": needs_verified},
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row["allowed"]), bool(row["verified"])
