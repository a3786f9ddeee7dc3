"""Every SQL statement on `domains` (the tenant's domain read model)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from mailroom_contracts.events import DomainRecord
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one
from psycopg.types.json import Jsonb


class DomainRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    status: str
    region: str
    mail_from_domain: str
    records: list[DomainRecord]
    track_opens: bool = False
    track_clicks: bool = False
    created_at: datetime
    last_checked_at: datetime | None = None
    # occurred_at of the domain event that wrote the row (None: written from an RPC reply)
    event_at: datetime | None = None


COLUMNS = columns(DomainRow)


async def get_domain(conn: Conn, tenant_id: str, domain_id: str) -> DomainRow | None:
    return await fetch_one(
        conn, DomainRow, f"SELECT {COLUMNS} FROM domains WHERE tenant_id = %s AND id = %s", (tenant_id, domain_id)
    )


async def find_domain_by_name(conn: Conn, tenant_id: str, name: str) -> DomainRow | None:
    """The tenant's domain of that name (case-insensitive): a verified one first, else the newest."""
    return await fetch_one(
        conn,
        DomainRow,
        f"SELECT {COLUMNS} FROM domains WHERE tenant_id = %s AND lower(name) = lower(%s)"
        " ORDER BY (status = 'verified') DESC, created_at DESC LIMIT 1",
        (tenant_id, name),
    )


async def list_domains(conn: Conn, tenant_id: str) -> list[DomainRow]:
    return await fetch_all(
        conn, DomainRow, f"SELECT {COLUMNS} FROM domains WHERE tenant_id = %s ORDER BY id", (tenant_id,)
    )


async def upsert_domain(conn: Conn, snapshot: DomainRow, event_at: datetime | None) -> bool:
    """Write a snapshot unless the stored one is newer (by last_checked_at, then event time).
    Returns whether it was written."""
    params = msgspec.structs.asdict(snapshot)
    params.update(records=Jsonb(msgspec.to_builtins(snapshot.records)), event_at=event_at)
    cur = await conn.execute(
        """
        INSERT INTO domains AS d (id, tenant_id, name, status, region, mail_from_domain, records, track_opens,
                                  track_clicks, created_at, last_checked_at, event_at)
        SELECT %(id)s, %(tenant_id)s, %(name)s, %(status)s, %(region)s, %(mail_from_domain)s, %(records)s,
                %(track_opens)s, %(track_clicks)s, %(created_at)s, %(last_checked_at)s, %(event_at)s
        WHERE NOT EXISTS (SELECT 1 FROM deleted_domains WHERE id = %(id)s)
        ON CONFLICT (id) DO UPDATE SET
            name = EXCLUDED.name, status = EXCLUDED.status, region = EXCLUDED.region,
            mail_from_domain = EXCLUDED.mail_from_domain, records = EXCLUDED.records,
            track_opens = EXCLUDED.track_opens, track_clicks = EXCLUDED.track_clicks,
            last_checked_at = EXCLUDED.last_checked_at,
            event_at = greatest(d.event_at, EXCLUDED.event_at), updated_at = now()
        WHERE (coalesce(EXCLUDED.last_checked_at, '-infinity'), coalesce(EXCLUDED.event_at, '-infinity'))
           >= (coalesce(d.last_checked_at, '-infinity'), coalesce(d.event_at, '-infinity'))
        RETURNING id
        """,
        params,
    )
    return await cur.fetchone() is not None


async def delete_domain(conn: Conn, tenant_id: str, domain_id: str) -> None:
    """Forget the domain and remember its id, so no later event of it is projected again."""
    await conn.execute("DELETE FROM domains WHERE tenant_id = %s AND id = %s", (tenant_id, domain_id))
    await conn.execute(
        "INSERT INTO deleted_domains (id, tenant_id) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
        (domain_id, tenant_id),
    )
