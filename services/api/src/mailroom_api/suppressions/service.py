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
    if not 1 <= limit <= MAX_LIMIT:
        raise validation(f"limit must be between 1 and {MAX_LIMIT}", "limit")
    if reason is not None and reason not in REASONS:
        raise validation("reason must be one of " + ", ".join(REASONS), "reason")
    rows = await repo.list_suppressions(
        conn,
        tenant_id=principal.tenant_id,
        mode=principal.mode,
        limit=limit + 1,
        after_email=decode_cursor(cursor) if cursor else None,
        reason=reason,
        email=normalised(email, "email") if email is not None else None,
    )
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].email) if len(rows) > limit else None
    return SuppressionList(data=[_entry(r) for r in page], next_cursor=next_cursor)


async def add_suppression(conn: Conn, principal: Principal, data: CreateSuppression) -> Suppression:
    """Idempotent: an address already on the list keeps its entry (reason, time), which is returned."""
    row, _ = await repo.add_manual(
        conn, tenant_id=principal.tenant_id, mode=principal.mode, email=normalised(data.email, "email")
    )
    return _entry(row)


async def delete_suppression(conn: Conn, principal: Principal, email: str) -> None:
    address = normalised(email, "email")
    if not await repo.delete_suppression(conn, tenant_id=principal.tenant_id, mode=principal.mode, email=address):
        raise not_found("suppression")
