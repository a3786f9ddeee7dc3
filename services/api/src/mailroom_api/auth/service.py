"""Who is calling. Tenant keys are `mr_live_…`/`mr_test_…`, stored only as SHA-256 hashes and
looked up on every request (no cache), so a revocation is effective at once on every replica.
The operator token is compared in constant time; with none configured `/admin` is closed."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from mailroom_kit.db import Conn

from mailroom_api.auth import repository as repo
from mailroom_api.errors import ApiError, forbidden

TOKEN_PREFIXES = {"live": "mr_live_", "test": "mr_test_"}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key of a tenant."""

    key_id: str
    tenant_id: str
    mode: str
    permission: str
    domain_id: str | None
    tenant_status: str

    def require_full_access(self) -> None:
        if self.permission != "full_access":
            raise forbidden("insufficient_permission", "this API key may only send and read emails")


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(conn: Conn, authorization: str | None) -> Principal:
    token = parse_bearer(authorization)
    if token is None:
        raise ApiError(401, "missing_api_key", "missing API key: send Authorization: Bearer mr_live_…")
    if not token.startswith(tuple(TOKEN_PREFIXES.values())):
        raise ApiError(401, "invalid_api_key", "invalid API key")
    row = await repo.find_key_by_hash(conn, hash_token(token))
    if row is None:
        raise ApiError(401, "invalid_api_key", "invalid API key")
    if row.revoked_at is not None:
        raise forbidden("api_key_revoked", "this API key has been revoked")
    return Principal(
        key_id=row.id,
        tenant_id=row.tenant_id,
        mode=row.mode,
        permission=row.permission,
        domain_id=row.domain_id,
        tenant_status=row.tenant_status,
    )


def operator_allowed(configured: str, authorization: str | None) -> None:
    token = parse_bearer(authorization)
    if not configured:
        raise ApiError(401, "invalid_api_key", "the operator API is disabled (no operator token configured)")
    if token is None:
        raise ApiError(401, "missing_api_key", "missing operator token")
    if not hmac.compare_digest(token.encode(), configured.encode()):
        raise ApiError(401, "invalid_api_key", "invalid operator token")
