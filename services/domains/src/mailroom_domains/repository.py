"""Every SQL statement of the domains service (schema `domains`: tables domains, domain_records).

Functions take a connection whose transaction the caller (the edge) owns, and return contract
Structs (`DomainSnapshot`) or plain values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from mailroom_contracts.events import DomainRecord, DomainSnapshot, DomainStatus, RecordStatus
from mailroom_kit.db import Conn
from psycopg.types.json import Jsonb

_DOMAIN_COLUMNS = (
    "id, tenant_id, name, status, region, mail_from_domain, track_opens, track_clicks, created_at, last_checked_at"
)


@dataclass(frozen=True)
class NameHolder:
    domain_id: str
    tenant_id: str
    status: DomainStatus


@dataclass(frozen=True)
class LockedDomain:
    snapshot: DomainSnapshot
    db_now: datetime
    status_since: datetime  # updated_at: when the current status began
    applied_check_seq: int  # the number of the check whose view the row holds (0: none yet)


def _record(row: dict[str, Any]) -> DomainRecord:
    return DomainRecord(
        purpose=row["purpose"],
        type=row["type"],
        name=row["name"],
        value=row["value"],
        priority=row["priority"],
        required=row["required"],
        status=row["status"],
        found=list(row["found"] or []),
        detail=row["detail"],
        last_checked_at=row["last_checked_at"],
    )


def _snapshot(row: dict[str, Any], records: list[DomainRecord]) -> DomainSnapshot:
    return DomainSnapshot(
        domain_id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        status=row["status"],
        region=row["region"],
        mail_from_domain=row["mail_from_domain"],
        records=records,
        track_opens=row["track_opens"],
        track_clicks=row["track_clicks"],
        created_at=row["created_at"],
        last_checked_at=row["last_checked_at"],
    )


async def _records(conn: Conn, domain_id: str) -> list[DomainRecord]:
    cur = await conn.execute(
        "SELECT purpose, type, name, value, priority, required, status, found, detail, last_checked_at "
        "FROM domain_records "
        "WHERE domain_id = %s ORDER BY position",
        (domain_id,),
    )
    return [_record(r) for r in await cur.fetchall()]


async def find_live_holder(conn: Conn, name: str) -> NameHolder | None:
    """Who holds `name` now (any status except failed), if anyone."""
    cur = await conn.execute(
        "SELECT id, tenant_id, status FROM domains WHERE name = %s AND status <> 'failed'", (name,)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return NameHolder(domain_id=row["id"], tenant_id=row["tenant_id"], status=row["status"])


async def insert_domain(
    conn: Conn,
    *,
    domain_id: str,
    tenant_id: str,
    name: str,
    region: str,
    mail_from_subdomain: str,
    mail_from_domain: str,
    track_opens: bool,
    track_clicks: bool,
    records: Sequence[DomainRecord],
) -> DomainSnapshot | None:
    """Insert a pending domain and its records; None if the name is already held (the race loser)."""
    cur = await conn.execute(
        "INSERT INTO domains (id, tenant_id, name, region, mail_from_subdomain, mail_from_domain, "
        "track_opens, track_clicks) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (name) WHERE status <> 'failed' DO NOTHING "
        f"RETURNING {_DOMAIN_COLUMNS}",
        (domain_id, tenant_id, name, region, mail_from_subdomain, mail_from_domain, track_opens, track_clicks),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    async with conn.cursor() as rcur:
        await rcur.executemany(
            "INSERT INTO domain_records "
            "(domain_id, position, purpose, type, name, value, priority, required, status) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (domain_id, i, r.purpose, r.type, r.name, r.value, r.priority, r.required, r.status)
                for i, r in enumerate(records)
            ],
        )
    return _snapshot(row, list(records))


async def get_domain(conn: Conn, domain_id: str) -> DomainSnapshot | None:
    cur = await conn.execute(f"SELECT {_DOMAIN_COLUMNS} FROM domains WHERE id = %s", (domain_id,))
    row = await cur.fetchone()
    if row is None:
        return None
    return _snapshot(row, await _records(conn, domain_id))


async def start_check(conn: Conn, domain_id: str) -> tuple[DomainSnapshot, int] | None:
    """The domain as a check begins, and the check's number: the next `check_seq` of the domain,
    so checks of one domain are numbered in the order they began (None: no such domain)."""
    cur = await conn.execute(
        f"UPDATE domains SET check_seq = check_seq + 1 WHERE id = %s RETURNING {_DOMAIN_COLUMNS}, check_seq",
        (domain_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return _snapshot(row, await _records(conn, domain_id)), int(row["check_seq"])


async def lock_domain(conn: Conn, domain_id: str) -> LockedDomain | None:
    """The domain, locked until the transaction ends, with the database's clock read once the lock is held
    (never earlier than its last check, so `last_checked_at` only moves forward)."""
    cur = await conn.execute(
        f"SELECT {_DOMAIN_COLUMNS}, updated_at, applied_check_seq FROM domains WHERE id = %s FOR UPDATE",
        (domain_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    clock = await (
        await conn.execute("SELECT greatest(clock_timestamp(), %s::timestamptz) AS t", (row["last_checked_at"],))
    ).fetchone()
    assert clock is not None
    return LockedDomain(
        snapshot=_snapshot(row, await _records(conn, domain_id)),
        db_now=clock["t"],
        status_since=row["updated_at"],
        applied_check_seq=int(row["applied_check_seq"]),
    )


async def claim_due(conn: Conn, *, limit: int, lease_seconds: float, now: datetime | None = None) -> list[str]:
    """Ids of up to `limit` domains due for a check at `now` (None: the database's clock), pushed
    `lease_seconds` ahead so no other replica claims them meanwhile. Rows another replica is
    claiming right now are skipped, not waited for."""
    cur = await conn.execute(
        "UPDATE domains SET next_check_at = coalesce(%(now)s::timestamptz, now()) + make_interval(secs => %(lease)s) "
        "WHERE id IN (SELECT id FROM domains WHERE status <> 'failed' "
        "AND next_check_at <= coalesce(%(now)s::timestamptz, now()) "
        "ORDER BY next_check_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
        "RETURNING id",
        {"now": now, "lease": lease_seconds, "limit": limit},
    )
    return [cast(str, r["id"]) for r in await cur.fetchall()]


async def save_check(
    conn: Conn,
    domain_id: str,
    *,
    status: DomainStatus,
    record_statuses: Sequence[RecordStatus],
    failure_reason: str | None,
    checked_at: datetime,
    next_check_in_seconds: float,
    record_found: Sequence[Sequence[str]] | None = None,
    record_details: Sequence[str | None] | None = None,
    check_seq: int | None = None,
) -> None:
    """Store the outcome of a check (status, each record's status, when it was and is next checked;
    with `record_found`/`record_details`, also what DNS answered for each record and why; with
    `check_seq`, the number of the check, whose view the row now holds)."""
    await conn.execute(
        "UPDATE domains SET "
        "updated_at = CASE WHEN status <> %(status)s THEN %(at)s ELSE updated_at END, "
        "verified_at = CASE WHEN %(status)s = 'verified' AND verified_at IS NULL THEN %(at)s "
        "ELSE verified_at END, "
        "status = %(status)s, failure_reason = CASE WHEN %(status)s = 'verified' THEN NULL "
        "ELSE coalesce(%(reason)s, failure_reason) END, "
        "last_checked_at = %(at)s, "
        "next_check_at = %(at)s + make_interval(secs => %(next)s), "
        "applied_check_seq = coalesce(%(seq)s, applied_check_seq) "
        "WHERE id = %(id)s",
        {
            "status": status,
            "at": checked_at,
            "reason": failure_reason,
            "next": next_check_in_seconds,
            "id": domain_id,
            "seq": check_seq,
        },
    )
    await conn.execute(
        "UPDATE domain_records AS r SET status = v.status "
        "FROM unnest(%s::smallint[], %s::text[]) AS v(position, status) "
        "WHERE r.domain_id = %s AND r.position = v.position AND r.status <> v.status",
        (list(range(len(record_statuses))), list(record_statuses), domain_id),
    )
    if record_found is not None and record_details is not None:
        # One row per record; found is passed as JSON arrays (a text[][] cannot be ragged).
        await conn.execute(
            "UPDATE domain_records AS r SET "
            "found = ARRAY(SELECT jsonb_array_elements_text(v.found)), detail = v.detail, last_checked_at = %s "
            "FROM unnest(%s::smallint[], %s::jsonb[], %s::text[]) AS v(position, found, detail) "
            "WHERE r.domain_id = %s AND r.position = v.position",
            (
                checked_at,
                list(range(len(record_found))),
                [Jsonb(list(f)) for f in record_found],
                list(record_details),
                domain_id,
            ),
        )


async def postpone_check(conn: Conn, domain_id: str, *, seconds: float, now: datetime | None = None) -> None:
    """Try again in `seconds` (the check could not be made, e.g. SES unreachable)."""
    await conn.execute(
        "UPDATE domains SET next_check_at = coalesce(%s::timestamptz, now()) + make_interval(secs => %s) "
        "WHERE id = %s AND status <> 'failed'",
        (now, seconds, domain_id),
    )


# --------------------------------------------------------------------------- issue 18: one tenant's domain


async def find_tenant_domain(conn: Conn, tenant_id: str, domain_id: str) -> DomainSnapshot | None:
    """The domain if it belongs to `tenant_id` (another tenant's id reads as absent)."""
    cur = await conn.execute(
        f"SELECT {_DOMAIN_COLUMNS} FROM domains WHERE id = %s AND tenant_id = %s", (domain_id, tenant_id)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return _snapshot(row, await _records(conn, domain_id))


async def make_due(conn: Conn, domain_id: str, *, now: datetime | None = None) -> None:
    """Check it at the next poll (POST /v1/domains/{id}/verify)."""
    await conn.execute(
        "UPDATE domains SET next_check_at = coalesce(%s::timestamptz, now()) WHERE id = %s AND status <> 'failed'",
        (now, domain_id),
    )


async def lock_tenant_domain(conn: Conn, tenant_id: str, domain_id: str) -> DomainSnapshot | None:
    """The tenant's domain, row-locked until the transaction ends (a concurrent check applies after)."""
    cur = await conn.execute(
        f"SELECT {_DOMAIN_COLUMNS} FROM domains WHERE id = %s AND tenant_id = %s FOR UPDATE", (domain_id, tenant_id)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return _snapshot(row, await _records(conn, domain_id))


async def set_tracking(conn: Conn, domain_id: str, *, track_opens: bool, track_clicks: bool) -> None:
    await conn.execute(
        "UPDATE domains SET track_opens = %s, track_clicks = %s WHERE id = %s", (track_opens, track_clicks, domain_id)
    )


async def delete_domain(conn: Conn, domain_id: str) -> None:
    """Delete the domain and its records (ON DELETE CASCADE); its name is free again."""
    await conn.execute("DELETE FROM domains WHERE id = %s", (domain_id,))
