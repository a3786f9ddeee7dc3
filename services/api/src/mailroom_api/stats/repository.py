"""Every SQL statement on `stats_hourly`: the projector's upsert of a batch's counts, and the
bucketed read of `GET /v1/stats`."""

from __future__ import annotations

from datetime import datetime

import msgspec
from mailroom_kit.db import Conn, fetch_all

COUNTERS = (
    "sent",
    "delivered",
    "delivery_delayed",
    "bounced_hard",
    "bounced_soft",
    "complained",
    "opened",
    "opened_unique",
    "clicked",
    "clicked_unique",
    "failed",
    "suppressed",
    "unsubscribed",
)

RollupKey = tuple[str, str, str, datetime, str]  # tenant, mode, tag ('' for every email), hour, domain


class EmailFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the stats need of an email: where its counts go, and its counters after this batch."""

    id: str
    tenant_id: str
    mode: str
    domain: str
    tags: dict[str, str]
    opens: int
    clicks: int


async def email_facts(conn: Conn, email_ids: list[str]) -> list[EmailFacts]:
    """The emails of `email_ids` (locked by the projector already, so their counters are this batch's)."""
    return await fetch_all(
        conn,
        EmailFacts,
        "SELECT id, tenant_id, mode, lower(from_domain) AS domain, tags, opens, clicks FROM emails WHERE id = ANY(%s)",
        (email_ids,),
    )


async def add_counts(conn: Conn, counts: dict[RollupKey, dict[str, int]]) -> None:
    """Add `counts` to their rollup rows in one statement, in key order (two batches touching the
    same rows lock them in the same order, so they cannot deadlock)."""
    if not counts:
        return
    keys = sorted(counts)
    columns = ", ".join(COUNTERS)
    typed = ", ".join(f"{c} bigint" for c in COUNTERS)
    updates = ", ".join(f"{c} = stats_hourly.{c} + excluded.{c}" for c in COUNTERS)
    # One JSON text, not arrays: psycopg dumps a list element by element in Python (issue 15).
    rows = [
        {"tenant_id": k[0], "mode": k[1], "tag": k[2], "hour": k[3], "domain": k[4]}
        | {c: counts[k].get(c, 0) for c in COUNTERS}
        for k in keys
    ]
    await conn.execute(
        f"INSERT INTO stats_hourly (tenant_id, mode, tag, hour, domain, {columns})"  # columns are constants
        f" SELECT tenant_id, mode, tag, hour, domain, {columns} FROM jsonb_to_recordset(%s::jsonb)"
        f" AS r(tenant_id text, mode text, tag text, hour timestamptz, domain text, {typed})"
        f" ORDER BY 1, 2, 3, 4, 5"
        f" ON CONFLICT (tenant_id, mode, tag, hour, domain) DO UPDATE SET {updates}",
        (msgspec.json.encode(rows).decode(),),
    )


class BucketRow(msgspec.Struct, frozen=True, kw_only=True):
    bucket: datetime
    sent: int
    delivered: int
    delivery_delayed: int
    bounced_hard: int
    bounced_soft: int
    complained: int
    opened: int
    opened_unique: int
    clicked: int
    clicked_unique: int
    failed: int
    suppressed: int
    unsubscribed: int


async def buckets(
    conn: Conn,
    *,
    tenant_id: str,
    mode: str,
    start: datetime,
    end: datetime,
    granularity: str,
    domain: str | None,
    tag: str,
) -> list[BucketRow]:
    """The summed counts per UTC hour or day in [start, end) of the non-empty buckets, oldest first."""
    assert granularity in ("hour", "day")
    sums = ", ".join(f"sum({c})::bigint AS {c}" for c in COUNTERS)
    return await fetch_all(
        conn,
        BucketRow,
        f"SELECT date_trunc(%(granularity)s, hour, 'UTC') AS bucket, {sums} FROM stats_hourly"
        " WHERE tenant_id = %(tenant)s AND mode = %(mode)s AND tag = %(tag)s"
        " AND hour >= %(start)s AND hour < %(end)s"
        " AND (%(domain)s::text IS NULL OR domain = %(domain)s::text)"
        " GROUP BY 1 ORDER BY 1",
        {
            "granularity": granularity,
            "tenant": tenant_id,
            "mode": mode,
            "tag": tag,
            "start": start,
            "end": end,
            "domain": domain,
        },
    )
