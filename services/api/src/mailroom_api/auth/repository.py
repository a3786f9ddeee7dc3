"""The SQL authentication needs: one key by its token hash, with its tenant's status, and the
NOTIFY that makes every API process forget the keys it remembered (auth/cache.py)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from mailroom_kit.db import Conn, fetch_one


class KeyPrincipalRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant_id: str
    mode: str
    permission: str
    domain_id: str | None
    revoked_at: datetime | None
    tenant_status: str


async def find_key_by_hash(conn: Conn, token_hash: str) -> KeyPrincipalRow | None:
    """The key and its tenant's status, for authenticating one request."""
    return await fetch_one(
        conn,
        KeyPrincipalRow,
        "SELECT k.id, k.tenant_id, k.mode, k.permission, k.domain_id, k.revoked_at, t.status AS tenant_status"
        " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.token_hash = %s",
        (token_hash,),
    )


AUTH_CHANNEL = "mailroom_api_auth"


async def notify_auth_changed(conn: Conn) -> None:
    """In the transaction of a change that can refuse a key: delivered to every API process on commit."""
    await conn.execute("SELECT pg_notify(%s, '')", (AUTH_CHANNEL,))
