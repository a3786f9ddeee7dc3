"""Tenant settings. The default sender is checked as a send's `from` would be: its syntax, and for
a live key a verified domain of the tenant (403 `domain_not_verified`), for a key limited to a
domain that domain (403 `from_domain_not_allowed`). Changing it NOTIFYs every API process to
forget its cached keys (the default travels on the cached Principal, so sends read no row for it)."""

from __future__ import annotations

import msgspec
from mailroom_kit.db import Conn

from mailroom_api.account import repository as repo
from mailroom_api.account.schemas import AccountSettings, UpdateSettings
from mailroom_api.auth import repository as auth_repo
from mailroom_api.auth.service import Principal
from mailroom_api.emails.validation import parse_address
from mailroom_api.errors import forbidden, not_found


async def get_settings(conn: Conn, principal: Principal) -> AccountSettings:
    row = await repo.get_settings(conn, principal.tenant_id)
    if row is None:
        raise not_found("tenant")
    return AccountSettings(default_from=row.default_from)


async def update_settings(conn: Conn, principal: Principal, req: UpdateSettings) -> AccountSettings:
    if req.default_from is msgspec.UNSET:
        return await get_settings(conn, principal)
    default_from = None
    if req.default_from is not None:
        address = parse_address(req.default_from, "default_from")
        allowed, verified = await repo.domain_allowed(
            conn,
            tenant_id=principal.tenant_id,
            domain=address.domain,
            key_domain_id=principal.domain_id,
            needs_verified=principal.mode == "live",
        )
        if not allowed:
            raise forbidden("from_domain_not_allowed", "this API key may only send from its own domain")
        if not verified:
            raise forbidden("domain_not_verified", f"{address.domain} is not a verified domain of this account")
        default_from = address.original
    row = await repo.set_default_from(conn, principal.tenant_id, default_from)
    if row is None:
        raise not_found("tenant")
    await auth_repo.notify_auth_changed(conn)
    return AccountSettings(default_from=row.default_from)
