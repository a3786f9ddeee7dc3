"""Every SQL statement of the limits: the shared token buckets (`rate_buckets`, UNLOGGED) and the
monthly counts (`tenant_usage`, written by the accept statements in emails/repository.py)."""

from __future__ import annotations

from datetime import date

import msgspec
from mailroom_kit.db import Conn, fetch_one


class Take(msgspec.Struct, frozen=True, kw_only=True):
    granted: int  # 0: refused (fewer tokens than the request costs, or than the burst)
    tokens: float  # the bucket after the take (below 0 after a batch larger than what was left)


# The bucket refilled by `rate` per second since its last take (up to `burst`); a take of `cost`
# passes when at least min(cost, burst) tokens are there (so a batch larger than the burst passes
# on a full bucket and leaves it in debt), and then also leases up to `spare` more for the
# process. A waiter on the row lock has an older now() than the holder: elapsed time is clamped.
_AVAILABLE = (
    "least(%(burst)s::float8, b.tokens"
    " + greatest(0, extract(epoch FROM now() - b.refilled_at)::float8) * %(rate)s::float8)"
)
_GRANT = (
    f"CASE WHEN {_AVAILABLE} >= least(%(cost)s::int, %(burst)s::int)"
    f" THEN %(cost)s::int + least(%(spare)s::int, greatest(0, floor({_AVAILABLE} - %(cost)s::int))::int)"
    " ELSE 0 END"
)
_TAKE = f"""
INSERT INTO rate_buckets AS b (tenant_id, tokens, refilled_at, granted)
VALUES (%(tenant_id)s, %(burst)s::float8 - %(first_grant)s::int, now(), %(first_grant)s::int)
ON CONFLICT (tenant_id) DO UPDATE SET
    granted = {_GRANT},
    tokens = {_AVAILABLE} - {_GRANT},
    refilled_at = greatest(b.refilled_at, now())
RETURNING granted, tokens
"""


async def take_tokens(conn: Conn, tenant_id: str, *, rate: int, burst: int, cost: int, spare: int) -> Take:
    """Take `cost` tokens (plus up to `spare` for the caller's lease) from the tenant's bucket, in
    one autocommit statement on an UNLOGGED table: no WAL, so no flush at commit, so the row lock is
    held for microseconds whatever the disk."""
    first_grant = cost + min(spare, max(0, burst - cost))  # a new bucket is full
    row = await fetch_one(
        conn,
        Take,
        _TAKE,
        {
            "tenant_id": tenant_id,
            "rate": rate,
            "burst": burst,
            "cost": cost,
            "spare": spare,
            "first_grant": first_grant,
        },
    )
    assert row is not None  # an upsert always returns its row
    return row


class MonthUsage(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    recipients: int


async def month_usage(conn: Conn, tenant_ids: list[str], month: date) -> dict[str, int]:
    """Live recipients accepted in `month` (its first day) per tenant of `tenant_ids` (absent: 0)."""
    cur = await conn.execute(
        "SELECT tenant_id, recipients FROM tenant_usage WHERE month = %s AND tenant_id = ANY(%s)",
        (month, tenant_ids),
    )
    return {row["tenant_id"]: int(row["recipients"]) for row in await cur.fetchall()}
