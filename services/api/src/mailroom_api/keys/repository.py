"""Every SQL statement on `api_keys` (authentication's lookup lives with `auth`)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from mailroom_kit.db import Conn, columns, fetch_all, fetch_one


class ApiKeyRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    name: str
    mode: str
    permission: str
    domain_id: str | None
    token_prefix: str
    token_last4: str
    created_at: datetime
    revoked_at: datetime | None


COLUMNS = columns(ApiKeyRow)


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
) -> ApiKeyRow:
    row = await fetch_one(
        conn,
        ApiKeyRow,
        "INSERT INTO api_keys (id, tenant_id, name, mode, permission, domain_id, token_hash, token_prefix,"
        f" token_last4) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
        (key_id, tenant_id, name, mode, permission, domain_id, token_hash, token_prefix, token_last4),
    )
    assert row is not None
    return row


async def list_api_keys(conn: Conn, tenant_id: str) -> list[ApiKeyRow]:
    return await fetch_all(
        conn, ApiKeyRow, f"SELECT {COLUMNS} FROM api_keys WHERE tenant_id = %s ORDER BY id", (tenant_id,)
    )


async def revoke_api_key(conn: Conn, tenant_id: str, key_id: str) -> ApiKeyRow | None:
    """Revoke (keeping the first revocation time); None if the tenant has no such key."""
    return await fetch_one(
        conn,
        ApiKeyRow,
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE tenant_id = %s AND id = %s"
        f" RETURNING {COLUMNS}",
        (tenant_id, key_id),
    )
