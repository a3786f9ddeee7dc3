"""Every SQL statement of the api service (schema `api`, first on the search_path)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailroom_kit.db import Conn
from psycopg.types.json import Jsonb

Row = dict[str, Any]


# --------------------------------------------------------------------------- tenants


async def insert_tenant(
    conn: Conn, *, tenant_id: str, name: str, monthly_quota: int | None, rate_limit: int | None
) -> Row:
    cur = await conn.execute(
        "INSERT INTO tenants (id, name, monthly_quota, rate_limit) VALUES (%s, %s, %s, %s) RETURNING *",
        (tenant_id, name, monthly_quota, rate_limit),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def get_tenant(conn: Conn, tenant_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM tenants WHERE id = %s", (tenant_id,))
    return await cur.fetchone()


async def list_tenants(conn: Conn) -> list[Row]:
    cur = await conn.execute("SELECT * FROM tenants ORDER BY id")
    return await cur.fetchall()


async def update_tenant(conn: Conn, tenant_id: str, changes: dict[str, Any]) -> Row | None:
    allowed = {"name", "status", "monthly_quota", "rate_limit"}
    cols = [c for c in changes if c in allowed]
    assignments = ", ".join(f"{c} = %s" for c in cols)
    sets = f"{assignments}, updated_at = now()" if cols else "updated_at = updated_at"
    cur = await conn.execute(
        f"UPDATE tenants SET {sets} WHERE id = %s RETURNING *",  # columns come from the allow-list above
        (*[changes[c] for c in cols], tenant_id),
    )
    return await cur.fetchone()


# --------------------------------------------------------------------------- API keys


async def insert_api_key(
    conn: Conn,
    *,
    key_id: str,
    tenant_id: str,
    name: str,
    mode: str,
    permission: str,
    domain_id: str | None,
    token_hash: str,
    token_prefix: str,
    token_last4: str,
) -> Row:
    cur = await conn.execute(
        "INSERT INTO api_keys (id, tenant_id, name, mode, permission, domain_id, token_hash, token_prefix,"
        " token_last4) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
        (key_id, tenant_id, name, mode, permission, domain_id, token_hash, token_prefix, token_last4),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def find_key_by_hash(conn: Conn, token_hash: str) -> Row | None:
    """The key and its tenant's status, for authenticating one request."""
    cur = await conn.execute(
        "SELECT k.*, t.status AS tenant_status FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        " WHERE k.token_hash = %s",
        (token_hash,),
    )
    return await cur.fetchone()


async def list_api_keys(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute("SELECT * FROM api_keys WHERE tenant_id = %s ORDER BY id", (tenant_id,))
    return await cur.fetchall()


async def revoke_api_key(conn: Conn, tenant_id: str, key_id: str) -> Row | None:
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE tenant_id = %s AND id = %s RETURNING *",
        (tenant_id, key_id),
    )
    return await cur.fetchone()


# --------------------------------------------------------------------------- domains


async def get_domain(conn: Conn, tenant_id: str, domain_id: str) -> Row | None:
    cur = await conn.execute("SELECT * FROM domains WHERE tenant_id = %s AND id = %s", (tenant_id, domain_id))
    return await cur.fetchone()


async def find_domain_by_name(conn: Conn, tenant_id: str, name: str) -> Row | None:
    cur = await conn.execute(
        "SELECT * FROM domains WHERE tenant_id = %s AND lower(name) = lower(%s)"
        " ORDER BY (status = 'verified') DESC, created_at DESC LIMIT 1",
        (tenant_id, name),
    )
    return await cur.fetchone()


async def list_domains(conn: Conn, tenant_id: str) -> list[Row]:
    cur = await conn.execute("SELECT * FROM domains WHERE tenant_id = %s ORDER BY id", (tenant_id,))
    return await cur.fetchall()


async def upsert_domain(conn: Conn, snapshot: Row, event_at: datetime | None) -> bool:
    """Write a snapshot unless the stored one is newer (by last_checked_at, then event time).
    Returns whether it was written."""
    cur = await conn.execute(
        """
        INSERT INTO domains AS d (id, tenant_id, name, status, region, mail_from_domain, records, track_opens,
                                  track_clicks, created_at, last_checked_at, event_at)
        VALUES (%(id)s, %(tenant_id)s, %(name)s, %(status)s, %(region)s, %(mail_from_domain)s, %(records)s,
                %(track_opens)s, %(track_clicks)s, %(created_at)s, %(last_checked_at)s, %(event_at)s)
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
        {**snapshot, "records": Jsonb(snapshot["records"]), "event_at": event_at},
    )
    return await cur.fetchone() is not None


# --------------------------------------------------------------------------- emails


async def insert_email(conn: Conn, email: Row) -> None:
    await conn.execute(
        """
        INSERT INTO emails (id, tenant_id, api_key_id, mode, from_address, from_domain, to_addresses,
                            cc_addresses, bcc_addresses, reply_to, subject, html, text, headers, tags,
                            metadata, status, created_at, last_event_at)
        VALUES (%(id)s, %(tenant_id)s, %(api_key_id)s, %(mode)s, %(from_address)s, %(from_domain)s, %(to)s,
                %(cc)s, %(bcc)s, %(reply_to)s, %(subject)s, %(html)s, %(text)s, %(headers)s, %(tags)s,
                %(metadata)s, %(status)s, %(created_at)s, %(created_at)s)
        """,
        {
            **email,
            "to": Jsonb(email["to"]),
            "cc": Jsonb(email["cc"]),
            "bcc": Jsonb(email["bcc"]),
            "reply_to": Jsonb(email["reply_to"]),
            "headers": Jsonb(email["headers"]),
            "tags": Jsonb(email["tags"]),
            "metadata": Jsonb(email["metadata"]) if email["metadata"] is not None else None,
        },
    )


async def insert_recipients(conn: Conn, email_id: str, recipients: list[tuple[str, str]], status: str) -> None:
    """`recipients`: (address, type) in order."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO email_recipients (email_id, position, address, type, status) VALUES (%s, %s, %s, %s, %s)",
            [(email_id, i, address, kind, status) for i, (address, kind) in enumerate(recipients)],
        )


async def insert_timeline_event(
    conn: Conn, *, event_id: str, email_id: str, type_: str, occurred_at: datetime, data: dict[str, Any]
) -> bool:
    """Record a timeline entry; False if this event id was already recorded (a redelivery)."""
    cur = await conn.execute(
        "INSERT INTO email_events (id, email_id, type, occurred_at, data) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING id",
        (event_id, email_id, type_, occurred_at, Jsonb(data)),
    )
    return await cur.fetchone() is not None


async def get_email(conn: Conn, tenant_id: str, mode: str, email_id: str) -> Row | None:
    cur = await conn.execute(
        "SELECT * FROM emails WHERE id = %s AND tenant_id = %s AND mode = %s", (email_id, tenant_id, mode)
    )
    return await cur.fetchone()


async def lock_email(conn: Conn, email_id: str) -> Row | None:
    cur = await conn.execute(
        "SELECT id, tenant_id, status, last_event_at FROM emails WHERE id = %s FOR UPDATE", (email_id,)
    )
    return await cur.fetchone()


async def update_email_status(conn: Conn, email_id: str, status: str, last_event_at: datetime) -> None:
    await conn.execute(
        "UPDATE emails SET status = %s, last_event_at = greatest(last_event_at, %s) WHERE id = %s",
        (status, last_event_at, email_id),
    )


async def get_recipients(conn: Conn, email_id: str) -> list[Row]:
    cur = await conn.execute(
        "SELECT position, address, type, status FROM email_recipients WHERE email_id = %s ORDER BY position",
        (email_id,),
    )
    return await cur.fetchall()


async def update_recipient_status(conn: Conn, email_id: str, position: int, status: str) -> None:
    await conn.execute(
        "UPDATE email_recipients SET status = %s, updated_at = now() WHERE email_id = %s AND position = %s",
        (status, email_id, position),
    )


async def get_timeline(conn: Conn, email_id: str) -> list[Row]:
    cur = await conn.execute(
        "SELECT id, type, occurred_at, data FROM email_events WHERE email_id = %s ORDER BY occurred_at, recorded_at",
        (email_id,),
    )
    return await cur.fetchall()


async def list_emails(
    conn: Conn,
    *,
    tenant_id: str,
    mode: str,
    limit: int,
    before_id: str | None,
    status: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    to: str | None = None,
    tag: dict[str, str] | None = None,
    domain: str | None = None,
) -> list[Row]:
    """Newest first; keyset pagination on the (time-sortable) id."""
    cur = await conn.execute(
        """
        SELECT * FROM emails
        WHERE tenant_id = %(tenant_id)s AND mode = %(mode)s
          AND (%(before_id)s::text IS NULL OR id < %(before_id)s)
          AND (%(status)s::text IS NULL OR status = %(status)s)
          AND (%(created_after)s::timestamptz IS NULL OR created_at >= %(created_after)s)
          AND (%(created_before)s::timestamptz IS NULL OR created_at < %(created_before)s)
          AND (%(domain)s::text IS NULL OR from_domain = lower(%(domain)s))
          AND (%(tag)s::jsonb IS NULL OR tags @> %(tag)s::jsonb)
          AND (%(to)s::text IS NULL OR EXISTS (
                SELECT 1 FROM email_recipients r
                WHERE r.email_id = emails.id AND lower(r.address) = lower(%(to)s)))
        ORDER BY id DESC
        LIMIT %(limit)s
        """,
        {
            "tenant_id": tenant_id,
            "mode": mode,
            "before_id": before_id,
            "status": status,
            "created_after": created_after,
            "created_before": created_before,
            "to": to,
            "tag": Jsonb(tag) if tag is not None else None,
            "domain": domain,
            "limit": limit,
        },
    )
    return await cur.fetchall()


# --------------------------------------------------------------------------- inbox (idempotent consumers)


async def claim_event(conn: Conn, consumer: str, event_id: str) -> bool:
    """True the first time this consumer sees `event_id` (in the caller's transaction)."""
    cur = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING event_id",
        (consumer, event_id),
    )
    return await cur.fetchone() is not None
