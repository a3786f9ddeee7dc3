"""Who is calling. Tenant keys are `mr_live_…`/`mr_test_…`, stored only as SHA-256 hashes and
looked up by hash, through the process's `KeyCache` (at most 1 s old, forgotten on every revocation
or tenant status change: see auth/cache.py). The operator token is compared in constant time; with
none configured `/admin` is closed."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailroom_kit.db import Conn, Pool

from mailroom_api.auth import repository as repo
from mailroom_api.auth.cache import KeyCache
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
    # The tenant's default sender (`from` when a send omits it) and its domains' tracking
    # defaults ({lower-case name: (opens, clicks)}, only domains that track something).
    default_from: str | None = None
    domain_tracking: Mapping[str, tuple[bool, bool]] = field(default_factory=dict)
    # Issue 22: the tenant's suppression list of this mode is not empty (see emails/service.py).
    has_suppressions: bool = False
    # Issue 23: the tenant's rate limit and burst (None: the server's defaults), monthly quota of
    # live recipients (None: none) and the end of its trial (None: no trial).
    rate_limit: int | None = None
    rate_burst: int | None = None
    monthly_quota: int | None = None
    trial_ends_at: datetime | None = None
    # Issue 22: why the tenant is paused or blocked (said in the 403).
    tenant_status_reason: str | None = None

    def tracking_defaults(self, domain: str) -> tuple[bool, bool]:
        """(track_opens, track_clicks) of the tenant's domain `domain` (lower-case); off if unknown."""
        return self.domain_tracking.get(domain, (False, False))

    def require_may_send(self) -> None:
        """The tenant's state allows sending (SPEC §2: 403 tenant_paused / tenant_blocked, 402 trial_expired).
        Checked before anything else of a send: before its template is read or rendered too."""
        why = f": {self.tenant_status_reason}" if self.tenant_status_reason else ""
        if self.tenant_status == "paused":
            raise forbidden("tenant_paused", f"sending is paused for this account{why}")
        if self.tenant_status == "blocked":
            raise forbidden("tenant_blocked", f"sending is blocked for this account{why}")
        if self.trial_ends_at is not None and datetime.now(UTC) >= self.trial_ends_at:  # issue 23
            raise ApiError(402, "trial_expired", "the trial of this account has ended; it can no longer send email")

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


def token_hash_of(authorization: str | None) -> str:
    """The hash to look the key up by; 401 for a missing or malformed key."""
    token = parse_bearer(authorization)
    if token is None:
        raise ApiError(401, "missing_api_key", "missing API key: send Authorization: Bearer mr_live_…")
    if not token.startswith(tuple(TOKEN_PREFIXES.values())):
        raise ApiError(401, "invalid_api_key", "invalid API key")
    return hash_token(token)


def principal_of(row: repo.KeyPrincipalRow | None) -> Principal:
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
        default_from=row.default_from,
        domain_tracking=row.domain_tracking,
        has_suppressions=row.has_suppressions,
        rate_limit=row.rate_limit,
        rate_burst=row.rate_burst,
        monthly_quota=row.monthly_quota,
        trial_ends_at=row.trial_ends_at,
        tenant_status_reason=row.tenant_status_reason,
    )


async def authenticate(conn: Conn, authorization: str | None) -> Principal:
    """Look the key up on `conn` (no cache)."""
    return principal_of(await repo.find_key_by_hash(conn, token_hash_of(authorization)))


async def authenticate_cached(pool: Pool, cache: KeyCache, authorization: str | None) -> Principal:
    """Look the key up in `cache`, else on a connection of `pool` (then remember it)."""
    token_hash = token_hash_of(authorization)

    async def fetch() -> repo.KeyPrincipalRow | None:
        async with pool.connection() as conn:
            return await repo.find_key_by_hash(conn, token_hash)

    return principal_of(await cache.lookup(token_hash, fetch))


def operator_allowed(configured: str, authorization: str | None) -> None:
    token = parse_bearer(authorization)
    if not configured:
        raise ApiError(401, "invalid_api_key", "the operator API is disabled (no operator token configured)")
    if token is None:
        raise ApiError(401, "missing_api_key", "missing operator token")
    if not hmac.compare_digest(token.encode(), configured.encode()):
        raise ApiError(401, "invalid_api_key", "invalid operator token")
