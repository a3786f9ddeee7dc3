"""Every SQL statement of the webhooks service (schema `webhooks`, first on the search_path)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from mailroom_kit.db import Conn

from mailroom_webhooks.payloads import EmailSummary

# NOTIFY'd by the fan-out, LISTENed to by the dispatchers (through the kit's PgWaker).
DELIVERIES_CHANNEL = "mailroom_webhooks_deliveries"
# Serialises claims across replicas so the per-endpoint in-flight bound holds globally.
_CLAIM_LOCK = 0x6D72_7768_636C_6D00  # "mrwhclm"

_ENDPOINT_COLUMNS = (
    "id, tenant_id, url, events, description, enabled, created_at, disabled_reason, disabled_at, "
    "previous_secret_expires_at, format"
)


# ----------------------------------------------------------------------------- endpoints


async def insert_endpoint(
    conn: Conn,
    *,
    endpoint_id: str,
    tenant_id: str,
    url: str,
    events: list[str],
    description: str | None,
    secret_encrypted: str,
    format: str = "standard",
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO endpoints (id, tenant_id, url, events, description, secret_encrypted, format) "
        f"VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_ENDPOINT_COLUMNS}",
        (endpoint_id, tenant_id, url, events, description, secret_encrypted, format),
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def list_endpoints(conn: Conn, tenant_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = %s AND deleted_at IS NULL ORDER BY id DESC",
        (tenant_id,),
    )
    return await cur.fetchall()


async def get_endpoint(conn: Conn, tenant_id: str, endpoint_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE id = %s AND tenant_id = %s AND deleted_at IS NULL",
        (endpoint_id, tenant_id),
    )
    return await cur.fetchone()


async def soft_delete_endpoint(conn: Conn, tenant_id: str, endpoint_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "UPDATE endpoints SET deleted_at = now(), enabled = false, updated_at = now() "
        f"WHERE id = %s AND tenant_id = %s AND deleted_at IS NULL RETURNING {_ENDPOINT_COLUMNS}",
        (endpoint_id, tenant_id),
    )
    return await cur.fetchone()


async def disable_endpoint(
    conn: Conn, endpoint_id: str, reason: str, *, now: datetime | None = None
) -> dict[str, Any] | None:
    """Disable an enabled endpoint and leave the tenant a `webhook.disabled` notice; returns its
    `tenant_id`, `disabled_at` and `failing_since`, or None if it was already disabled (or
    deleted): one notice per disabling."""
    cur = await conn.execute(
        "WITH off AS (UPDATE endpoints SET enabled = false, disabled_reason = %(reason)s,"
        " disabled_at = coalesce(%(now)s::timestamptz, now()),"
        " updated_at = now() WHERE id = %(id)s AND enabled AND deleted_at IS NULL"
        " RETURNING id, tenant_id, disabled_at, failing_since),"
        " noted AS (INSERT INTO endpoint_notices (endpoint_id, type, reason, created_at)"
        " SELECT id, 'webhook.disabled', %(reason)s, disabled_at FROM off)"
        " SELECT tenant_id, disabled_at, failing_since FROM off",
        {"id": endpoint_id, "reason": reason, "now": now},
    )
    return await cur.fetchone()


async def list_notices(conn: Conn, endpoint_id: str, limit: int = 20) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT type, reason, created_at FROM endpoint_notices WHERE endpoint_id = %s ORDER BY id DESC LIMIT %s",
        (endpoint_id, limit),
    )
    return await cur.fetchall()


async def update_endpoint(
    conn: Conn,
    tenant_id: str,
    endpoint_id: str,
    *,
    url: str | None,
    events: list[str] | None,
    description: str | None,
    set_description: bool,
    enabled: bool | None,
) -> dict[str, Any] | None:
    """Change the given fields of a live endpoint. Enabling clears the disabled reason and the
    failure run; disabling by the tenant records reason `manual` (no notice: they did it)."""
    cur = await conn.execute(
        "UPDATE endpoints SET url = coalesce(%(url)s, url), events = coalesce(%(events)s, events),"
        " description = CASE WHEN %(set_description)s THEN %(description)s ELSE description END,"
        " enabled = coalesce(%(enabled)s, enabled),"
        " disabled_reason = CASE WHEN %(enabled)s IS TRUE THEN NULL"
        "   WHEN %(enabled)s IS FALSE AND enabled THEN 'manual' ELSE disabled_reason END,"
        " disabled_at = CASE WHEN %(enabled)s IS TRUE THEN NULL"
        "   WHEN %(enabled)s IS FALSE AND enabled THEN now() ELSE disabled_at END,"
        " failing_since = CASE WHEN %(enabled)s IS TRUE AND NOT enabled THEN NULL ELSE failing_since END,"
        " updated_at = now()"
        f" WHERE id = %(id)s AND tenant_id = %(tenant)s AND deleted_at IS NULL RETURNING {_ENDPOINT_COLUMNS}",
        {
            "url": url,
            "events": events,
            "description": description,
            "set_description": set_description,
            "enabled": enabled,
            "id": endpoint_id,
            "tenant": tenant_id,
        },
    )
    return await cur.fetchone()


async def resume_pending_deliveries(conn: Conn, endpoint_id: str, *, now: datetime) -> int:
    """Make the pending deliveries of a re-enabled endpoint due now (they waited while it was off)."""
    cur = await conn.execute(
        "UPDATE deliveries SET next_attempt_at = %s, updated_at = now()"
        " WHERE endpoint_id = %s AND status = 'pending' AND next_attempt_at > %s",
        (now, endpoint_id, now),
    )
    return cur.rowcount


async def rotate_secret(
    conn: Conn, tenant_id: str, endpoint_id: str, *, secret_encrypted: str, previous_expires_at: datetime
) -> dict[str, Any] | None:
    """The current secret becomes the previous one (signing until `previous_expires_at`)."""
    cur = await conn.execute(
        "UPDATE endpoints SET previous_secret_encrypted = secret_encrypted, secret_encrypted = %s,"
        " previous_secret_expires_at = %s, updated_at = now()"
        f" WHERE id = %s AND tenant_id = %s AND deleted_at IS NULL RETURNING {_ENDPOINT_COLUMNS}",
        (secret_encrypted, previous_expires_at, endpoint_id, tenant_id),
    )
    return await cur.fetchone()


async def note_failure(conn: Conn, endpoint_id: str, *, now: datetime) -> dict[str, Any] | None:
    """Start (or continue) the endpoint's run of failures; returns its start and whether it is enabled."""
    cur = await conn.execute(
        "UPDATE endpoints SET failing_since = coalesce(failing_since, %s) WHERE id = %s"
        " RETURNING failing_since, enabled",
        (now, endpoint_id),
    )
    return await cur.fetchone()


async def note_success(conn: Conn, endpoint_id: str) -> None:
    await conn.execute(
        "UPDATE endpoints SET failing_since = NULL WHERE id = %s AND failing_since IS NOT NULL", (endpoint_id,)
    )


async def cancel_pending_deliveries(conn: Conn, endpoint_id: str, reason: str) -> int:
    cur = await conn.execute(
        "UPDATE deliveries SET status = 'canceled', last_error = %s, completed_at = now(), "
        "updated_at = now() "
        "WHERE endpoint_id = %s "
        "AND (status = 'pending' OR (status = 'in_flight' AND lease_expires_at <= now()))",
        (reason, endpoint_id),
    )
    return cur.rowcount


async def subscribed_endpoint_ids(conn: Conn, tenant_id: str, event_type: str) -> list[str]:
    cur = await conn.execute(
        "SELECT id FROM endpoints WHERE tenant_id = %s AND enabled AND deleted_at IS NULL "
        "AND (%s = ANY(events) OR '*' = ANY(events)) ORDER BY id",
        (tenant_id, event_type),
    )
    return [row["id"] for row in await cur.fetchall()]


# ----------------------------------------------------------------------------- fan-out of a batch


async def insert_email_summaries(conn: Conn, summaries: list[tuple[EmailSummary, datetime]]) -> None:
    """`insert_email_summary` for a batch, in one statement: (summary, created_at)."""
    if not summaries:
        return
    # One JSON text, not ten arrays: psycopg dumps a list element by element in Python.
    await conn.execute(
        "INSERT INTO email_summaries (email_id, tenant_id, mode, from_address, to_addresses, recipients, "
        "subject, tags, metadata, created_at) "
        "SELECT email_id, tenant_id, mode, from_address, to_addresses, recipients, subject, tags, metadata, created_at "
        "FROM jsonb_to_recordset(%s::jsonb) AS s(email_id text, tenant_id text, mode text, from_address text, "
        "to_addresses jsonb, recipients jsonb, subject text, tags jsonb, metadata jsonb, created_at timestamptz) "
        "ON CONFLICT (email_id) DO NOTHING",
        (msgspec.json.encode([{**msgspec.structs.asdict(s), "created_at": c} for s, c in summaries]).decode(),),
    )


async def get_email_summaries(conn: Conn, email_ids: list[str]) -> list[dict[str, Any]]:
    """The recorded summaries of `email_ids` (the caller matches each to its event's tenant)."""
    if not email_ids:
        return []
    cur = await conn.execute(
        "SELECT email_id, tenant_id, mode, from_address, to_addresses, recipients, subject, tags, metadata "
        "FROM email_summaries WHERE email_id = ANY(%s)",
        (sorted(set(email_ids)),),
    )
    return await cur.fetchall()


async def live_endpoints(conn: Conn, tenant_ids: list[str]) -> list[dict[str, Any]]:
    """Enabled, not deleted endpoints of `tenant_ids` with the event types they subscribe to, by id."""
    if not tenant_ids:
        return []
    cur = await conn.execute(
        "SELECT id, tenant_id, events FROM endpoints WHERE tenant_id = ANY(%s) AND enabled AND deleted_at IS NULL "
        "ORDER BY id",
        (sorted(set(tenant_ids)),),
    )
    return await cur.fetchall()


class NewDelivery(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: str
    endpoint_id: str
    tenant_id: str
    event_id: str
    event_type: str
    payload: bytes
    # Deliveries of one endpoint with the same key go out one at a time, in the order recorded
    # (the email id of an email event); None: no order.
    order_key: str | None = None
    # The fan-out span's W3C context (tracing.context_text()); None when tracing is off.
    trace_context: str | None = None


async def insert_deliveries(conn: Conn, deliveries: list[NewDelivery]) -> list[str]:
    """`insert_delivery` for a batch, in one statement; returns the event id of each delivery that
    was new (one per endpoint and event)."""
    if not deliveries:
        return []
    # In list order (ORDER BY the ordinality): `seq` numbers the deliveries of one email in the
    # order its events came.
    # One JSON text (payloads base64, decoded by the statement), not eight arrays (see above).
    cur = await conn.execute(
        "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload, order_key, trace_context) "
        "SELECT delivery_id, endpoint_id, tenant_id, event_id, event_type, decode(payload, 'base64'), order_key, "
        "trace_context FROM ROWS FROM (jsonb_to_recordset(%s::jsonb) AS (delivery_id text, endpoint_id text, "
        "tenant_id text, event_id text, event_type text, payload text, order_key text, trace_context text)) "
        "WITH ORDINALITY AS u(delivery_id, endpoint_id, tenant_id, event_id, event_type, payload, order_key, "
        "trace_context, n) "
        "ORDER BY n ON CONFLICT (endpoint_id, event_id) DO NOTHING RETURNING event_id",
        (msgspec.json.encode(deliveries).decode(),),
    )
    return [row["event_id"] for row in await cur.fetchall()]


# ----------------------------------------------------------------------------- deliveries


async def insert_delivery(
    conn: Conn,
    *,
    delivery_id: str,
    endpoint_id: str,
    tenant_id: str,
    event_id: str,
    event_type: str,
    payload: bytes,
    due_at: datetime | None = None,
    order_key: str | None = None,
    trace_context: str | None = None,
) -> bool:
    """One delivery, due at `due_at` (the dispatcher's clock; the database's now when None)."""
    cur = await conn.execute(
        "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload, next_attempt_at, "
        "order_key, trace_context) VALUES (%s, %s, %s, %s, %s, %s, coalesce(%s::timestamptz, now()), %s, %s) "
        "ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        (delivery_id, endpoint_id, tenant_id, event_id, event_type, payload, due_at, order_key, trace_context),
    )
    return cur.rowcount == 1


async def notify_deliveries(conn: Conn) -> None:
    """Wake the dispatchers (delivered on commit)."""
    await conn.execute("SELECT pg_notify(%s, '')", (DELIVERIES_CHANNEL,))


# The claim, per endpoint rather than over every due row (migration 0006), in four steps:
# 1. open_endpoints: the endpoints with pending or in-flight deliveries, a skip scan of
#    `deliveries_open_by_endpoint` (one index probe each; `ORDER BY endpoint_id, status` is that
#    index's order, so the planner cannot take `deliveries_endpoint` and filter finished rows).
# 2. room: of the enabled, live ones, each one's free slots, `per_endpoint` minus its live leases
#    (an index range of its in-flight rows). MATERIALIZED: counted once, not once per use.
# 3. candidates: per endpoint with room, its first `free` claimable rows in claim order
#    (next_attempt_at, id): pending and due, or in flight with an expired lease, each an index
#    range stopped by its LIMIT; locked rows are skipped; the order check (an earlier delivery of
#    the same endpoint and order key still open) is one probe of `deliveries_open_in_order` a row.
# 4. chosen: the oldest `limit` of those.
# So a claim reads about `free` rows per endpoint with open deliveries, never a busy endpoint's
# backlog: the statement it replaces read every due row of one endpoint ahead of the others' and
# cost 56 ms at 100,000 (232 ms when that endpoint had free slots); this one ≈ 3 ms at any backlog,
# ≈ 15 µs more per endpoint with open deliveries (bench/webhook_claim.py, services/webhooks/README.md).
# Public for the plan test (tests/test_repository.py) and the bench, which EXPLAIN it.
CLAIM_DUE_SQL = """
WITH RECURSIVE clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now), open_endpoints AS (
    (SELECT endpoint_id FROM deliveries WHERE status IN ('pending', 'in_flight')
     ORDER BY endpoint_id, status LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM deliveries d
            WHERE d.status IN ('pending', 'in_flight') AND d.endpoint_id > o.endpoint_id
            ORDER BY d.endpoint_id, d.status LIMIT 1)
    FROM open_endpoints o WHERE o.endpoint_id IS NOT NULL
), room AS MATERIALIZED (
    SELECT o.endpoint_id, %(per_endpoint)s - live.n AS free
    FROM open_endpoints o
    JOIN endpoints e ON e.id = o.endpoint_id AND e.enabled AND e.deleted_at IS NULL
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM deliveries b
        WHERE b.endpoint_id = o.endpoint_id AND b.status = 'in_flight'
          AND b.lease_expires_at > (SELECT now FROM clock)) live
    WHERE live.n < %(per_endpoint)s
), candidates AS (
    SELECT c.id, c.next_attempt_at, c.manual_retry FROM room r CROSS JOIN LATERAL (
        SELECT u.id, u.next_attempt_at, u.manual_retry FROM (
            SELECT * FROM (
                SELECT d.id, d.next_attempt_at, d.manual_retry FROM deliveries d
                WHERE d.endpoint_id = r.endpoint_id AND d.status = 'pending'
                  AND d.next_attempt_at <= (SELECT now FROM clock)
                  AND (d.order_key IS NULL OR NOT EXISTS (
                      SELECT 1 FROM deliveries p
                      WHERE p.endpoint_id = d.endpoint_id AND p.order_key = d.order_key AND p.seq < d.seq
                        AND p.status IN ('pending', 'in_flight')))
                ORDER BY d.next_attempt_at, d.id LIMIT r.free
                FOR UPDATE OF d SKIP LOCKED) due
            UNION ALL
            SELECT * FROM (
                SELECT d.id, d.next_attempt_at, d.manual_retry FROM deliveries d
                WHERE d.endpoint_id = r.endpoint_id AND d.status = 'in_flight'
                  AND d.lease_expires_at <= (SELECT now FROM clock)
                  AND (d.order_key IS NULL OR NOT EXISTS (
                      SELECT 1 FROM deliveries p
                      WHERE p.endpoint_id = d.endpoint_id AND p.order_key = d.order_key AND p.seq < d.seq
                        AND p.status IN ('pending', 'in_flight')))
                ORDER BY d.next_attempt_at, d.id LIMIT r.free
                FOR UPDATE OF d SKIP LOCKED) expired
        ) u ORDER BY u.next_attempt_at, u.id LIMIT r.free
    ) c
), chosen AS (
    SELECT id, manual_retry FROM candidates ORDER BY next_attempt_at, id LIMIT %(limit)s
)
UPDATE deliveries d
   SET status = 'in_flight', attempts = d.attempts + 1, manual_retry = false,
       lease_expires_at = (SELECT now FROM clock) + make_interval(secs => %(lease)s), updated_at = now()
  FROM chosen, endpoints e
 WHERE d.id = chosen.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.tenant_id, d.event_id, d.event_type, d.payload, d.attempts, d.trace_context,
          d.next_attempt_at, chosen.manual_retry AS manual, e.url, e.secret_encrypted, e.format,
          CASE WHEN e.previous_secret_expires_at > (SELECT now FROM clock) THEN e.previous_secret_encrypted END
              AS previous_secret_encrypted
"""


async def claim_due_deliveries(
    conn: Conn, *, now: datetime | None = None, limit: int, per_endpoint: int, lease_seconds: float
) -> list[dict[str, Any]]:
    """Claim up to `limit` due deliveries (pending and due, or in flight with an expired lease),
    oldest due first, never taking an endpoint above `per_endpoint` live claims, nor a delivery
    while an earlier one (lower `seq`) of the same endpoint and `order_key` is still pending or in
    flight: the events of one email reach an endpoint one at a time, in order. Call inside a
    transaction. `now` is the dispatcher's clock (injectable in tests; the database's when None),
    used for every time comparison here. The advisory lock makes each claim see the previous
    one's. Cost: a few index probes per endpoint with open deliveries (`CLAIM_DUE_SQL`)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
    cur = await conn.execute(
        CLAIM_DUE_SQL, claim_params(now=now, limit=limit, per_endpoint=per_endpoint, lease_seconds=lease_seconds)
    )
    # Oldest due first (RETURNING has no order of its own).
    return sorted(await cur.fetchall(), key=lambda r: (r["next_attempt_at"], r["id"]))


def claim_params(*, now: datetime | None, limit: int, per_endpoint: int, lease_seconds: float) -> dict[str, Any]:
    """The parameters of `CLAIM_DUE_SQL`."""
    return {"now": now, "per_endpoint": per_endpoint, "limit": limit, "lease": lease_seconds}


async def insert_attempt(
    conn: Conn,
    *,
    delivery_id: str,
    endpoint_id: str,
    attempt: int,
    started_at: datetime,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
    next_retry_at: datetime | None,
    response_body: str | None = None,
    manual: bool = False,
) -> None:
    await conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, endpoint_id, attempt, started_at, status_code, "
        "latency_ms, error, next_retry_at, response_body, manual) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            delivery_id,
            endpoint_id,
            attempt,
            started_at,
            status_code,
            latency_ms,
            error,
            next_retry_at,
            response_body,
            manual,
        ),
    )


async def finish_delivery(
    conn: Conn,
    *,
    delivery_id: str,
    attempt: int,
    status: str,
    status_code: int | None,
    error: str | None,
    now: datetime | None = None,
) -> bool:
    """Settle a claimed delivery as succeeded/failed; False if our claim was lost (lease expired)."""
    cur = await conn.execute(
        "UPDATE deliveries SET status = %s, last_status_code = %s, last_error = %s, lease_expires_at = NULL, "
        "completed_at = coalesce(%s::timestamptz, now()), updated_at = now() "
        "WHERE id = %s AND status = 'in_flight' AND attempts = %s",
        (status, status_code, error, now, delivery_id, attempt),
    )
    return cur.rowcount == 1


class Succeeded(msgspec.Struct, frozen=True, kw_only=True):
    """A successful attempt to settle (`settle_succeeded`)."""

    delivery_id: str
    endpoint_id: str
    attempt: int
    started_at: datetime
    status_code: int
    latency_ms: int
    response_body: str | None
    manual: bool
    completed_at: datetime


_SETTLE_SUCCEEDED = """
WITH s AS MATERIALIZED (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS (
        delivery_id text, endpoint_id text, attempt int, started_at timestamptz, status_code int, latency_ms int,
        response_body text, manual boolean, completed_at timestamptz
    )
), finished AS (
    UPDATE deliveries AS d
    SET status = 'succeeded', last_status_code = s.status_code, last_error = NULL, lease_expires_at = NULL,
        completed_at = s.completed_at, updated_at = now()
    FROM s
    WHERE d.id = s.delivery_id AND d.status = 'in_flight' AND d.attempts = s.attempt
        -- the planner guesses 100 rows for a JSON record set: the ids let it go by the index
        AND d.id = ANY(ARRAY(SELECT delivery_id FROM s))
    RETURNING d.id, d.endpoint_id
), attempts AS (
    INSERT INTO delivery_attempts (delivery_id, endpoint_id, attempt, started_at, status_code, latency_ms, error,
                                   next_retry_at, response_body, manual)
    SELECT delivery_id, endpoint_id, attempt, started_at, status_code, latency_ms, NULL, NULL, response_body, manual
    FROM s
    ON CONFLICT DO NOTHING
), recovered AS (
    UPDATE endpoints SET failing_since = NULL
    WHERE id IN (SELECT endpoint_id FROM finished) AND failing_since IS NOT NULL
)
SELECT coalesce(jsonb_agg(id), '[]'::jsonb) AS kept FROM finished
"""


async def settle_succeeded(conn: Conn, attempts: list[Succeeded]) -> list[bool]:
    """Successful attempts, of any deliveries, in ONE statement: what `finish_delivery`,
    `insert_attempt` and `note_success` do for each (the delivery succeeded while our claim holds,
    the attempt logged either way, its endpoint's run of failures ended). Per attempt, whether our
    claim still held (False: the lease had expired and another worker took the delivery)."""
    cur = await conn.execute(_SETTLE_SUCCEEDED, (msgspec.json.encode(attempts).decode(),))
    row = await cur.fetchone()
    assert row is not None
    kept = set(row["kept"])
    return [a.delivery_id in kept for a in attempts]


async def reschedule_delivery(
    conn: Conn,
    *,
    delivery_id: str,
    attempt: int,
    delay_seconds: float,
    status_code: int | None,
    error: str | None,
    now: datetime | None = None,
) -> datetime | None:
    """Put a claimed delivery back as pending for `delay_seconds` after `now` (the dispatcher's
    clock); return when it is due again, or None if our claim was lost (lease expired and someone
    else took it)."""
    cur = await conn.execute(
        "UPDATE deliveries SET status = 'pending',"
        " next_attempt_at = coalesce(%s::timestamptz, now()) + make_interval(secs => %s), "
        "last_status_code = %s, last_error = %s, lease_expires_at = NULL, updated_at = now() "
        "WHERE id = %s AND status = 'in_flight' AND attempts = %s RETURNING next_attempt_at",
        (now, delay_seconds, status_code, error, delivery_id, attempt),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    due: datetime = row["next_attempt_at"]
    return due


# ----------------------------------------------------------------------------- the delivery log

_DELIVERY_COLUMNS = (
    "id, endpoint_id, event_id, event_type, status, attempts, created_at, next_attempt_at, completed_at, "
    "last_status_code, last_error, lease_expires_at"
)


async def list_deliveries(
    conn: Conn,
    endpoint_id: str,
    *,
    limit: int,
    before_id: str | None,
    status: str | None,
    event_type: str | None,
) -> list[dict[str, Any]]:
    """One endpoint's deliveries, newest first (ids sort by creation), `limit` of them."""
    cur = await conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE endpoint_id = %(endpoint)s"
        " AND (%(before)s::text IS NULL OR id < %(before)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " AND (%(type)s::text IS NULL OR event_type = %(type)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"endpoint": endpoint_id, "before": before_id, "status": status, "type": event_type, "limit": limit},
    )
    return await cur.fetchall()


async def get_delivery(conn: Conn, endpoint_id: str, delivery_id: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = %s AND endpoint_id = %s", (delivery_id, endpoint_id)
    )
    return await cur.fetchone()


async def list_attempts(conn: Conn, delivery_id: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT attempt, started_at, status_code, latency_ms, error, response_body, next_retry_at, manual"
        " FROM delivery_attempts WHERE delivery_id = %s ORDER BY attempt",
        (delivery_id,),
    )
    return await cur.fetchall()


async def retry_delivery_now(conn: Conn, endpoint_id: str, delivery_id: str, *, now: datetime) -> dict[str, Any] | None:
    """Make a delivery that is not being attempted right now due at once (same event id, so the
    same webhook-id header); its next attempt row is marked manual. None if it is in flight."""
    cur = await conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = %(now)s, completed_at = NULL,"
        " lease_expires_at = NULL, manual_retry = true, updated_at = now()"
        " WHERE id = %(id)s AND endpoint_id = %(endpoint)s"
        " AND (status <> 'in_flight' OR lease_expires_at <= %(now)s)"
        f" RETURNING {_DELIVERY_COLUMNS}",
        {"now": now, "id": delivery_id, "endpoint": endpoint_id},
    )
    return await cur.fetchone()


async def endpoint_enabled(conn: Conn, tenant_id: str, endpoint_id: str) -> bool | None:
    """Whether the tenant's live endpoint is enabled; None if there is no such endpoint."""
    cur = await conn.execute(
        "SELECT enabled FROM endpoints WHERE id = %s AND tenant_id = %s AND deleted_at IS NULL",
        (endpoint_id, tenant_id),
    )
    row = await cur.fetchone()
    return None if row is None else bool(row["enabled"])


# ----------------------------------------------------------------------------- retention


async def purge_email_summaries(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` email summaries recorded before `cutoff` (a later event of such an
    email is delivered with a partial payload, as when its summary never arrived)."""
    cur = await conn.execute(
        "DELETE FROM email_summaries WHERE ctid IN"
        " (SELECT ctid FROM email_summaries WHERE recorded_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
    return cur.rowcount


async def purge_finished_deliveries(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` finished deliveries (succeeded, failed, canceled) created before
    `cutoff`, with their attempts. Pending and in-flight ones are kept whatever their age."""
    cur = await conn.execute(
        "WITH old AS (SELECT id FROM deliveries WHERE created_at < %s"
        " AND status IN ('succeeded', 'failed', 'canceled') LIMIT %s FOR UPDATE SKIP LOCKED),"
        " attempts AS (DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM old))"
        " DELETE FROM deliveries WHERE id IN (SELECT id FROM old)",
        (cutoff, limit),
    )
    return cur.rowcount


BACKLOG_STATES = ("due", "waiting", "in_flight", "paused")


async def delivery_backlog(conn: Conn, *, now: datetime | None = None) -> tuple[dict[str, int], float]:
    """The deliveries not finished, by state (`BACKLOG_STATES`; see metrics.DELIVERY_BACKLOG), and
    the seconds the longest-due one at an enabled endpoint has been due (0 when none is). Reads
    only the pending and in-flight rows (the partial index `deliveries_open_by_endpoint`)."""
    cur = await conn.execute(
        """
        WITH open AS (
            SELECT d.status, d.next_attempt_at <= coalesce(%(now)s::timestamptz, now()) AS is_due,
                   coalesce(%(now)s::timestamptz, now()) - d.next_attempt_at AS overdue,
                   (e.enabled AND e.deleted_at IS NULL) AS live
            FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
            WHERE d.status IN ('pending', 'in_flight')
        )
        SELECT
            count(*) FILTER (WHERE status = 'pending' AND live AND is_due) AS due,
            count(*) FILTER (WHERE status = 'pending' AND live AND NOT is_due) AS waiting,
            count(*) FILTER (WHERE status = 'in_flight') AS in_flight,
            count(*) FILTER (WHERE status = 'pending' AND NOT live) AS paused,
            coalesce(extract(epoch FROM max(overdue) FILTER (WHERE status = 'pending' AND live AND is_due)), 0)
                AS oldest_due_seconds
        FROM open
        """,
        {"now": now},
    )
    row = await cur.fetchone()
    assert row is not None
    return {state: int(row[state]) for state in BACKLOG_STATES}, float(row["oldest_due_seconds"])
