"""Every SQL statement of the Resend adapter: the Resend source form of templates created through
`/resend/templates` (table `resend_templates`, migration 0016), always within one tenant."""

from __future__ import annotations

from typing import Any

from mailroom_kit.db import Conn
from psycopg.types.json import Jsonb


async def put_source(conn: Conn, tenant_id: str, template_id: str, source: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO resend_templates (template_id, tenant_id, source) VALUES (%s, %s, %s) "
        "ON CONFLICT (template_id) DO UPDATE SET source = excluded.source, updated_at = now()",
        (template_id, tenant_id, Jsonb(source)),
    )


async def get_sources(conn: Conn, tenant_id: str, template_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not template_ids:
        return {}
    cur = await conn.execute(
        "SELECT template_id, source FROM resend_templates WHERE tenant_id = %s AND template_id = ANY(%s)",
        (tenant_id, template_ids),
    )
    return {row["template_id"]: row["source"] for row in await cur.fetchall()}
