"""API key rules: tokens are random, stored only as hashes and shown once; a key may be limited to
one of the tenant's domains; a test key can only create test keys."""

from __future__ import annotations

import secrets

from mailroom_kit.db import Conn
from mailroom_kit.ids import new_id

from mailroom_api.auth import repository as auth_repo
from mailroom_api.auth.service import TOKEN_PREFIXES, hash_token
from mailroom_api.checks import check_name
from mailroom_api.domains import service as domains
from mailroom_api.errors import forbidden, not_found, validation
from mailroom_api.keys import repository as repo
from mailroom_api.keys.schemas import ApiKey, CreateApiKey, CreatedApiKey
from mailroom_api.tenants import service as tenants


def _view(row: repo.ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        mode=row.mode,  # type: ignore[arg-type]  # the column's CHECK keeps it a Mode
        permission=row.permission,  # type: ignore[arg-type]
        domain_id=row.domain_id,
        prefix=row.token_prefix,
        last4=row.token_last4,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


async def create_api_key(
    conn: Conn, tenant_id: str, req: CreateApiKey, *, caller_mode: str | None = None
) -> CreatedApiKey:
    """`caller_mode` is the mode of the tenant key asking (None: the operator or the CLI)."""
    if caller_mode == "test" and req.mode == "live":
        # A test key never reaches SES; it must not be able to mint a key that does.
        raise forbidden("insufficient_permission", "a test key can only create test keys")
    name = check_name(req.name)
    if not await tenants.exists(conn, tenant_id):
        raise not_found("tenant")
    if req.domain_id is not None and not await domains.exists(conn, tenant_id, req.domain_id):
        raise validation("unknown domain", "domain_id")
    token = TOKEN_PREFIXES[req.mode] + secrets.token_urlsafe(32)
    row = await repo.insert_api_key(
        conn,
        key_id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        mode=req.mode,
        permission=req.permission,
        domain_id=req.domain_id,
        token_hash=hash_token(token),
        token_prefix=token[:12],
        token_last4=token[-4:],
    )
    view = _view(row)
    return CreatedApiKey(**{f: getattr(view, f) for f in CreatedApiKey.__struct_fields__ if f != "token"}, token=token)


async def list_api_keys(conn: Conn, tenant_id: str) -> list[ApiKey]:
    return [_view(r) for r in await repo.list_api_keys(conn, tenant_id)]


async def revoke_api_key(conn: Conn, tenant_id: str, key_id: str) -> ApiKey:
    row = await repo.revoke_api_key(conn, tenant_id, key_id)
    if row is None:
        raise not_found("API key")
    await auth_repo.notify_auth_changed(conn)  # every API process forgets the keys it remembered
    return _view(row)
