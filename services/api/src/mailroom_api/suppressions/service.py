"""The suppression list API: list (by reason, by address, paged), add by hand, remove — always
within the caller's tenant and mode (a test key sees and changes the test list only)."""

from __future__ import annotations

import base64
import binascii

from mailroom_kit.db import Conn

from mailroom_api.auth.service import Principal
from mailroom_api.emails.validation import parse_address
from mailroom_api.errors import not_found, validation
from mailroom_api.suppressions import repository as repo
from mailroom_api.suppressions.repository import SuppressionRow
from mailroom_api.suppressions.schemas import REASONS, CreateSuppression, Suppression, SuppressionList

MAX_LIMIT = 1000


def normalised(address: str, param: str) -> str:
    """The address as suppressions keep it (as unsubscribe/service.suppressed_form does): the
    recipient's normalised bare address, lower-cased; 422 naming `param` if it is not one."""
    return parse_address(address, param).email.lower()


def encode_cursor(email: str) -> str:
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        email = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise validation("invalid cursor", "cursor") from None
    if not email or email != email.lower() or "@" not in email:
        raise validation("invalid cursor", "cursor")
    return email


def _entry(row: SuppressionRow) -> Suppression:
    return Suppression(
        email=row.email,
        reason=row.reason,  # type: ignore[arg-type]  # the table's CHECK keeps it one of REASONS
        source_email_id=row.source_email_id,
        created_at=row.created_at,
    )


async def list_suppressions(
    conn: Conn,
    principal: Principal,
    *,
    limit: int,
    cursor: str | None,
    reason: str | None,
    email: str | None,
) -> SuppressionList:
    page, more = await page_suppressions(
        conn,
        principal,
        limit=limit,
        after=decode_cursor(cursor) if cursor else None,
        before=None,
        reason=reason,
        email=email,
    )
    return SuppressionList(data=page, next_cursor=encode_cursor(page[-1].email) if more else None)


async def page_suppressions(
    conn: Conn,
    principal: Principal,
    *,
    limit: int,
    after: str | None,
    before: str | None,
    reason: str | None,
    email: str | None,
) -> tuple[list[Suppression], bool]:
    """Up to `limit` entries by address after the address `after` (or the last ones before
    `before`), and whether there are more that way."""
    if not 1 <= limit <= MAX_LIMIT:
        raise validation(f"limit must be between 1 and {MAX_LIMIT}", "limit")
    if reason is not None and reason not in REASONS:
        raise validation("reason must be one of " + ", ".join(REASONS), "reason")
    rows = await repo.list_suppressions(
        conn,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        limit=limit + 1,
        after_email=after,
        before_email=before,
        reason=reason,
        email=normalised(email, "email") if email is not None else None,
    )
    more = len(rows) > limit
    page = (rows[1:] if before is not None else rows[:limit]) if more else rows
    return [_entry(r) for r in page], more


async def get_suppression(conn: Conn, principal: Principal, email: str) -> Suppression:
    """The caller's entry of `email` (normalised as at send); 404 if the address is not suppressed."""
    page, _ = await page_suppressions(conn, principal, limit=1, after=None, before=None, reason=None, email=email)
    if not page:
        raise not_found("suppression")
    return page[0]


async def add_suppression(conn: Conn, principal: Principal, data: CreateSuppression) -> Suppression:
    """Idempotent: an address already on the list keeps its entry (reason, time), which is returned."""
    row, _ = await repo.add_manual(
        conn, tenant_id=principal.tenant_id, mode=principal.mode, email=normalised(data.email, "email")
    )
    return _entry(row)


async def delete_suppression(conn: Conn, principal: Principal, email: str) -> None:
    if not await remove_suppression(conn, principal, normalised(email, "email")):
        raise not_found("suppression")


async def remove_suppression(conn: Conn, principal: Principal, address: str) -> bool:
    """Remove the caller's entry of the normalised `address`; False: there was none."""
    return await repo.delete_suppression(conn, tenant_id=principal.tenant_id, mode=principal.mode, email=address)
