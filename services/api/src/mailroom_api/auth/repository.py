"""The SQL authentication needs: one key by its token hash, with its tenant's status."""

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
