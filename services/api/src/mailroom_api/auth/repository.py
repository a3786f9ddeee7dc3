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
    # What a send needs from the tenant besides its status, so it costs no query of its own:
    # the default sender, and per domain name (lower-case) with tracking on, [opens, clicks].
    default_from: str | None = None
    domain_tracking: dict[str, tuple[bool, bool]] = {}
    # Issue 22: the tenant's suppression list of the key's mode has an entry (a send then looks
    # its recipients up; with an empty list it does not).
    has_suppressions: bool = False
    # Issue 23: the tenant's limits and trial (None: the server's default rate / no quota / no trial).
    rate_limit: int | None = None
    rate_burst: int | None = None
    monthly_quota: int | None = None
    trial_ends_at: datetime | None = None
    # Issue 22: why the tenant is paused or blocked (the operator's note or the reputation guard's
    # figures), said in the 403 of its sends.
    tenant_status_reason: str | None = None


async def find_key_by_hash(conn: Conn, token_hash: str) -> KeyPrincipalRow | None:
    """The key, its tenant's status and default sender, and the tracking defaults of the tenant's
    domains that track anything (of several rows of one name: the verified one, else the newest,
    as the send's domain check picks), for authenticating one request."""
    return await fetch_one(
        conn,
        KeyPrincipalRow,
        "SELECT k.id, k.tenant_id, k.mode, k.permission, k.domain_id, k.revoked_at, t.status AS tenant_status,"
        " t.default_from, (SELECT coalesce(jsonb_object_agg(d.name, jsonb_build_array(d.track_opens, d.track_clicks)),"
        " '{}') FROM (SELECT DISTINCT ON (lower(name)) lower(name) AS name, track_opens, track_clicks FROM domains"
        " WHERE tenant_id = k.tenant_id ORDER BY lower(name), (status = 'verified') DESC, created_at DESC) d"
        " WHERE d.track_opens OR d.track_clicks) AS domain_tracking,"
        " EXISTS (SELECT 1 FROM suppressions s WHERE s.tenant_id = k.tenant_id AND s.mode = k.mode)"
        " AS has_suppressions"
        ", t.rate_limit, t.rate_burst, t.monthly_quota, t.trial_ends_at"  # issue 23
        ", t.status_reason AS tenant_status_reason"  # issue 22
        " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.token_hash = %s",
        (token_hash,),
    )


AUTH_CHANNEL = "mailroom_api_auth"


async def notify_auth_changed(conn: Conn) -> None:
    """In the transaction of a change that can refuse a key: delivered to every API process on commit."""
    await conn.execute("SELECT pg_notify(%s, '')", (AUTH_CHANNEL,))
