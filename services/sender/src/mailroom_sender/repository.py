"""Every SQL statement of the sender (table `deliveries`). Callers own the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from mailroom_kit import tracing
from mailroom_kit.db import Conn
from mailroom_kit.outbox import rows_json

_COLUMNS = (
    "email_id, tenant_id, mode, recipients, state, attempts, attempt_started_at, provider, "
    "provider_message_id, failure_reason, resent_early, created_at, updated_at, "
    "(queued_event IS NOT NULL) AS queued"
)


@dataclass(frozen=True)
class Delivery:
    email_id: str
    tenant_id: str
    mode: str
    recipients: list[str]
    state: str
    attempts: int
    attempt_started_at: datetime | None
    provider: str | None
    provider_message_id: str | None
    failure_reason: str | None
    resent_early: bool
    created_at: datetime
    updated_at: datetime
    # issue 23: the sender's own queue (held.py) owns this email, not the JetStream message.
    queued: bool = False


@dataclass(frozen=True)
class LockedDelivery:
    delivery: Delivery
    # Seconds until an in-flight attempt stops being "in doubt" (Postgres clock; <= 0 = expired).
    in_doubt_remaining: float | None
    # issue 15: the tenant's status (`tenant_status`), read and share-locked by the same statement.
    tenant_status: str = "active"


def _delivery(row: dict[str, Any]) -> Delivery:
    return Delivery(**{k: row[k] for k in Delivery.__dataclass_fields__})


async def insert_if_missing(conn: Conn, *, email_id: str, tenant_id: str, mode: str, recipients: list[str]) -> None:
    await conn.execute(
        "INSERT INTO deliveries (email_id, tenant_id, mode, recipients) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (email_id) DO NOTHING",
        (email_id, tenant_id, mode, recipients),
    )


_REMAINING = "EXTRACT(EPOCH FROM (attempt_started_at + make_interval(secs => %s::float8) - now()))::float8 AS remaining"


async def insert_and_lock(
    conn: Conn, *, email_id: str, tenant_id: str, mode: str, recipients: list[str], in_doubt_seconds: float
) -> LockedDelivery:
    """The row, created if missing, locked until the transaction ends: one statement (the no-op
    `DO UPDATE` takes the row lock an `INSERT … DO NOTHING` + `SELECT … FOR UPDATE` took).

    issue 15: the same statement reads the tenant's status and share-locks it as `tenant_status`
    does, BEFORE the delivery row (the INSERT's input is computed from the locked tenant read, so
    the tenant lock comes first: the order `apply_tenant` uses, no deadlock). One round trip."""
    remaining = _REMAINING.replace("%s", "%(in_doubt)s")
    cur = await conn.execute(
        "WITH t AS MATERIALIZED (SELECT status FROM tenants WHERE tenant_id = %(tenant)s FOR SHARE), "
        "d AS (INSERT INTO deliveries (email_id, tenant_id, mode, recipients) "
        "  SELECT %(email)s, %(tenant)s, %(mode)s, %(recipients)s FROM (SELECT count(*) FROM t) AS tenant_locked "
        "  ON CONFLICT (email_id) DO UPDATE SET email_id = EXCLUDED.email_id "
        f"  RETURNING {_COLUMNS}, {remaining}) "
        "SELECT d.*, COALESCE((SELECT status FROM t), 'active') AS tenant_status FROM d",
        {"email": email_id, "tenant": tenant_id, "mode": mode, "recipients": recipients, "in_doubt": in_doubt_seconds},
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(email_id)
    return LockedDelivery(
        delivery=_delivery(row), in_doubt_remaining=row["remaining"], tenant_status=str(row["tenant_status"])
    )


async def lock(conn: Conn, email_id: str, *, in_doubt_seconds: float = 0.0) -> LockedDelivery | None:
    """The row, locked until the transaction ends, or None if unknown."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, {_REMAINING} FROM deliveries WHERE email_id = %s FOR UPDATE",
        (in_doubt_seconds, email_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return LockedDelivery(delivery=_delivery(row), in_doubt_remaining=row["remaining"])


async def lock_unsettled(conn: Conn, email_ids: list[str]) -> list[Delivery]:
    """The rows of `email_ids` that an SES Send event settles (`sending`, or `pending`/`held` after an
    attempt), locked until the transaction ends, taken in email id order (two batches sharing emails
    never deadlock). One statement; a row settled while this waited for its lock is re-checked
    against the condition by Postgres and left out."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM deliveries WHERE email_id = ANY(%s) "
        "AND (state = 'sending' OR (state IN ('pending', 'held') AND attempts > 0)) ORDER BY email_id FOR UPDATE",
        (email_ids,),
    )
    return [_delivery(row) for row in await cur.fetchall()]


async def get(conn: Conn, email_id: str) -> Delivery | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM deliveries WHERE email_id = %s", (email_id,))
    row = await cur.fetchone()
    return _delivery(row) if row else None


async def start_attempt(conn: Conn, email_id: str, *, provider: str, early_resend: bool = False) -> int:
    """pending/sending → sending with a new attempt; returns the attempt number. `early_resend`
    marks the row as re-sent before its in-doubt timeout (allowed once)."""
    attempt, _ = await start_attempt_at(conn, email_id, provider=provider, early_resend=early_resend)
    return attempt


async def start_attempt_at(
    conn: Conn, email_id: str, *, provider: str, early_resend: bool = False
) -> tuple[int, datetime]:
    """`start_attempt`, with the attempt's start (`attempt_started_at`, the database's clock)."""
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, attempt_started_at = now(), "
        "provider = %s, resent_early = resent_early OR %s, updated_at = now() WHERE email_id = %s "
        "RETURNING attempts, attempt_started_at",
        (provider, early_resend, email_id),
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError(email_id)
    return int(row["attempts"]), row["attempt_started_at"]


async def mark_sent(conn: Conn, email_id: str, *, provider: str, provider_message_id: str) -> None:
    await conn.execute(
        "UPDATE deliveries SET state = 'sent', provider = %s, provider_message_id = %s, "
        "failure_reason = NULL, queued_event = NULL, next_attempt_at = NULL, updated_at = now() WHERE email_id = %s",
        (provider, provider_message_id, email_id),
    )


async def mark_sent_unless_settled(
    conn: Conn, email_id: str, *, provider: str, provider_message_id: str
) -> Delivery | None:
    """→ sent unless already sent or failed, in one statement; the updated row, or None when
    it was settled already (or is unknown)."""
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'sent', provider = %s, provider_message_id = %s, "
        "failure_reason = NULL, queued_event = NULL, next_attempt_at = NULL, updated_at = now() "
        "WHERE email_id = %s AND state NOT IN ('sent', 'failed') "
        f"RETURNING {_COLUMNS}",
        (provider, provider_message_id, email_id),
    )
    row = await cur.fetchone()
    return _delivery(row) if row else None


_SENT_WITH_EVENTS = """
WITH d AS (
    UPDATE deliveries SET state = 'sent', provider = %(provider)s, provider_message_id = %(message_id)s,
        failure_reason = NULL, queued_event = NULL, next_attempt_at = NULL, updated_at = now()
    WHERE email_id = %(email)s AND state NOT IN ('sent', 'failed')
    RETURNING 1
), added AS (
    INSERT INTO outbox (event_id, subject, payload, trace_context)
    SELECT e.event_id, e.subject, decode(e.payload, 'base64'), %(trace_context)s::text
    FROM d, ROWS FROM (jsonb_to_recordset(%(outbox)s::jsonb) AS (event_id text, subject text, payload text))
        WITH ORDINALITY AS e (event_id, subject, payload, n)
    ORDER BY e.n
    ON CONFLICT (event_id) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM d) AS sent,
       (SELECT count(*) FROM (SELECT pg_notify(%(channel)s, '') FROM added LIMIT 1) AS woke) AS notified
"""


async def mark_sent_with_events(
    conn: Conn,
    email_id: str,
    *,
    provider: str,
    provider_message_id: str,
    outbox_rows: list[tuple[str, str, bytes]],
    channel: str,
) -> bool:
    """issue 15: → sent unless already sent or failed, and only then `outbox_rows` ((event_id,
    subject, payload), in order) into the outbox, NOTIFYing `channel`: ONE statement (on an
    autocommit connection its own transaction, one round trip). False when it was settled already
    (or is unknown): nothing was written."""
    cur = await conn.execute(
        _SENT_WITH_EVENTS,
        {
            "email": email_id,
            "provider": provider,
            "message_id": provider_message_id,
            "outbox": rows_json(outbox_rows),
            "trace_context": tracing.context_text(),
            "channel": channel,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row["sent"])


async def mark_failed(conn: Conn, email_id: str, *, reason: str) -> None:
    await conn.execute(
        "UPDATE deliveries SET state = 'failed', failure_reason = %s, queued_event = NULL, next_attempt_at = NULL, "
        "updated_at = now() WHERE email_id = %s",
        (reason, email_id),
    )


async def release_attempt(conn: Conn, email_id: str, *, attempt: int, reason: str) -> bool:
    """sending → pending, only if `attempt` is still the current one (nobody took over)."""
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'pending', failure_reason = %s, updated_at = now() "
        "WHERE email_id = %s AND state = 'sending' AND attempts = %s",
        (reason, email_id, attempt),
    )
    return cur.rowcount == 1


async def purge_settled(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Delete at most `limit` settled (sent or failed) deliveries created before `cutoff` (the
    retention job). Rows still pending or in doubt are kept whatever their age."""
    cur = await conn.execute(
        "DELETE FROM deliveries WHERE ctid IN (SELECT ctid FROM deliveries"
        " WHERE created_at < %s AND state IN ('sent', 'failed') LIMIT %s FOR UPDATE SKIP LOCKED)",
        (cutoff, limit),
    )
    return cur.rowcount


async def state_of(conn: Conn, email_id: str) -> str | None:
    """The delivery's state without locking it (None: not seen yet). issue 16: an offloaded email
    already settled needs no content fetch."""
    cur = await conn.execute("SELECT state FROM deliveries WHERE email_id = %s", (email_id,))
    row = await cur.fetchone()
    return None if row is None else str(row["state"])


# ---------------------------------------------------------------------- issue 23: tenant states


async def tenant_status(conn: Conn, tenant_id: str) -> str:
    """The tenant's status in the sender's read model, share-locked until the transaction ends so a
    status change (`apply_tenant`) waits for a send decision in flight and vice versa. Taken BEFORE
    the delivery row's lock (`apply_tenant` locks the tenant, then its deliveries: same order, no
    deadlock). No row = the tenant never changed status = active."""
    cur = await conn.execute("SELECT status FROM tenants WHERE tenant_id = %s FOR SHARE", (tenant_id,))
    row = await cur.fetchone()
    return "active" if row is None else str(row["status"])


async def apply_tenant(
    conn: Conn, *, tenant_id: str, status: str, status_reason: str | None, updated_at: datetime
) -> bool:
    """Upsert the tenant's state unless the row already holds a state at least as recent (latest
    `updated_at` wins: redelivered and reordered events are no-ops). True = applied."""
    cur = await conn.execute(
        "INSERT INTO tenants (tenant_id, status, status_reason, updated_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET status = EXCLUDED.status, status_reason = EXCLUDED.status_reason, "
        "updated_at = EXCLUDED.updated_at WHERE tenants.updated_at < EXCLUDED.updated_at RETURNING tenant_id",
        (tenant_id, status, status_reason, updated_at),
    )
    return await cur.fetchone() is not None


async def hold(conn: Conn, email_id: str, *, queued_event: bytes | None, stream: str | None = None) -> None:
    """→ held. `queued_event` (the EmailQueued as published) hands the email to the sender's own
    queue; None keeps the one the row already has (a queued email held again). `stream`: the
    email's, kept for the operator's per-stream counts (None keeps the row's)."""
    await conn.execute(
        "UPDATE deliveries SET state = 'held', queued_event = COALESCE(%s, queued_event), "
        "stream = COALESCE(%s, stream), next_attempt_at = now(), updated_at = now() WHERE email_id = %s",
        (queued_event, stream, email_id),
    )


@dataclass(frozen=True)
class Backlogged:
    """An email of a stream backlog handed to the sender's queue unprocessed (`queue_backlog`)."""

    email_id: str
    tenant_id: str
    mode: str
    recipients: list[str]
    queued_event: bytes
    stream: str


async def queue_backlog(conn: Conn, emails: list[Backlogged]) -> set[str]:
    """issue 23 fairness: new `held` rows owned by the sender's queue (the EmailQueued as published
    in `queued_event`, due now, no attempt yet), one statement for all. Emails with a row already
    are left alone (not in the returned ids: the caller hands those to the per-message path)."""
    if not emails:
        return set()
    # One JSON text (the event base64 in it, decoded by the statement), not six arrays: psycopg dumps
    # a list element by element in Python (a bytea[] of 128 events was 11 % of the sender's CPU).
    cur = await conn.execute(
        "INSERT INTO deliveries (email_id, tenant_id, mode, recipients, state, queued_event, stream, next_attempt_at) "
        "SELECT u.email_id, u.tenant_id, u.mode, ARRAY(SELECT jsonb_array_elements_text(u.recipients)), 'held', "
        "decode(u.queued_event, 'base64'), u.stream, now() "
        "FROM jsonb_to_recordset(%s::jsonb) "
        "AS u(email_id text, tenant_id text, mode text, recipients jsonb, queued_event text, stream text) "
        "ON CONFLICT (email_id) DO NOTHING RETURNING email_id",
        (msgspec.json.encode(emails).decode(),),
    )
    return {str(r["email_id"]) for r in await cur.fetchall()}


async def lock_held_of_tenant(conn: Conn, tenant_id: str) -> list[Delivery]:
    """The tenant's held deliveries, locked (a blocked tenant's are failed)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM deliveries WHERE tenant_id = %s AND state = 'held' ORDER BY created_at FOR UPDATE",
        (tenant_id,),
    )
    return [_delivery(r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class QueuedEmail:
    email_id: str
    queued_event: bytes
    attempts: int


async def claim_queued(conn: Conn, *, limit: int, lease_seconds: float) -> list[QueuedEmail]:
    """Up to `limit` emails the sender's queue owns that are due, none of a paused tenant still held,
    leased for `lease_seconds` (their `next_attempt_at` moves on, so another replica takes one only
    if this one died with it). Rows other replicas are claiming are skipped.

    **Fair order** (issue 23): round-robin over tenants. Each due email gets its turn, its rank
    among its own tenant's due emails (oldest first); a batch takes every tenant's first email,
    then every tenant's second, … So a tenant with one email waiting is in the very next batch
    however many the others have queued. Returned in that order (the governor's tokens are taken
    in it)."""
    cur = await conn.execute(
        # The tenants with emails in the queue: a skip scan of `deliveries_queued_turn` (one index
        # probe per tenant, migration 0008), then each tenant's first `window` due emails in turn
        # order (an index-only range stopped by the LIMIT). So a claim reads at most `window` rows
        # per queued tenant, not the whole backlog: a window function over every due row cost
        # ≈ 70 ms at 100k queued of one tenant, this ≈ 2 ms (services/sender/README.md, Fairness).
        "WITH RECURSIVE queued_tenants AS ("
        "  (SELECT tenant_id FROM deliveries WHERE queued_event IS NOT NULL ORDER BY tenant_id LIMIT 1) "
        "  UNION ALL SELECT (SELECT d.tenant_id FROM deliveries d WHERE d.queued_event IS NOT NULL "
        "    AND d.tenant_id > q.tenant_id ORDER BY d.tenant_id LIMIT 1) "
        "  FROM queued_tenants q WHERE q.tenant_id IS NOT NULL), "
        "due AS (SELECT x.email_id, x.next_attempt_at, x.turn FROM queued_tenants q "
        "  LEFT JOIN tenants t ON t.tenant_id = q.tenant_id "
        "  CROSS JOIN LATERAL (SELECT d.email_id, d.next_attempt_at, "
        "    row_number() OVER (ORDER BY d.next_attempt_at, d.email_id) AS turn FROM deliveries d "
        "    WHERE d.tenant_id = q.tenant_id AND d.queued_event IS NOT NULL AND d.next_attempt_at <= now() "
        "    AND d.state IN ('held', 'pending', 'sending') "
        "    AND NOT (d.state = 'held' AND t.status IS NOT DISTINCT FROM 'paused') "
        "    ORDER BY d.next_attempt_at, d.email_id LIMIT %(window)s) x "
        "  WHERE q.tenant_id IS NOT NULL), "
        "pick AS (SELECT email_id, next_attempt_at, turn FROM due ORDER BY turn, next_attempt_at LIMIT %(window)s), "
        "claimed AS (SELECT d.email_id, pick.turn, pick.next_attempt_at AS due_at FROM deliveries d "
        "  JOIN pick ON pick.email_id = d.email_id "
        "  WHERE d.queued_event IS NOT NULL AND d.next_attempt_at <= now() "
        "  ORDER BY pick.turn, pick.next_attempt_at LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED) "
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => %(lease)s::float8) "
        "FROM claimed WHERE deliveries.email_id = claimed.email_id "
        "RETURNING deliveries.email_id, deliveries.queued_event, deliveries.attempts, claimed.turn, claimed.due_at",
        # A wider window than the batch, so rows another replica is claiming leave room for others.
        {"lease": lease_seconds, "limit": limit, "window": limit * 4},
    )
    rows = sorted(await cur.fetchall(), key=lambda r: (r["turn"], r["due_at"]))
    return [
        QueuedEmail(email_id=r["email_id"], queued_event=bytes(r["queued_event"]), attempts=int(r["attempts"]))
        for r in rows
    ]


async def reschedule(conn: Conn, email_id: str, *, delay_seconds: float) -> None:
    """A queued email not settled this time: try again after `delay_seconds`."""
    await conn.execute(
        "UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => %s::float8) "
        "WHERE email_id = %s AND queued_event IS NOT NULL",
        (delay_seconds, email_id),
    )


async def queue_summary(conn: Conn) -> dict[str, int]:
    """The sender's own queue by reason, for the operator (ops.py): `tenant_paused` (held for a
    paused tenant), `waiting` (next try later: a daily-quota recheck, a backoff), `due` (now)."""
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE d.state = 'held' AND t.status IS NOT DISTINCT FROM 'paused') AS tenant_paused, "
        " count(*) FILTER (WHERE NOT (d.state = 'held' AND t.status IS NOT DISTINCT FROM 'paused') "
        "  AND d.next_attempt_at > now()) AS waiting, "
        " count(*) FILTER (WHERE NOT (d.state = 'held' AND t.status IS NOT DISTINCT FROM 'paused') "
        "  AND d.next_attempt_at <= now()) AS due "
        "FROM deliveries d LEFT JOIN tenants t ON t.tenant_id = d.tenant_id "
        "WHERE d.queued_event IS NOT NULL AND d.state IN ('held', 'pending', 'sending')"
    )
    row = await cur.fetchone()
    return {k: int(row[k]) if row else 0 for k in ("tenant_paused", "waiting", "due")}


async def queue_by_stream_and_tenant(conn: Conn) -> list[dict[str, Any]]:
    """The sender's own queue grouped by tenant, stream and whether the tenant is paused, for the
    operator API (sending.py): rows of tenant_id, stream, paused, n. The stream is the row's
    (written with queued_event since migration 0007); only rows held before it are read from the
    kept EmailQueued (the contract's JSON; absent = transactional). COALESCE is lazy: a row with a
    stream is never parsed (100,000 parsed rows of 5 KB cost ~7.5 s; the column, ~0.1 s)."""
    cur = await conn.execute(
        "SELECT d.tenant_id, "
        " COALESCE(d.stream, convert_from(d.queued_event, 'UTF8')::jsonb ->> 'stream', 'transactional') AS stream, "
        " (d.state = 'held' AND t.status IS NOT DISTINCT FROM 'paused') AS paused, count(*) AS n "
        "FROM deliveries d LEFT JOIN tenants t ON t.tenant_id = d.tenant_id "
        "WHERE d.queued_event IS NOT NULL AND d.state IN ('held', 'pending', 'sending') "
        "GROUP BY 1, 2, 3"
    )
    return [
        {"tenant_id": r["tenant_id"], "stream": r["stream"], "paused": bool(r["paused"]), "n": int(r["n"])}
        for r in await cur.fetchall()
    ]


# ---------------------------------------------------------------------- issue 23: send-rate governor


@dataclass(frozen=True)
class Token:
    granted: bool
    # The daily quota is reached for this stream: hold the email, do not wait for a token.
    daily_exhausted: bool
    available: float
    needed: float
    rate: float
    # issue 15: tokens granted by this statement (0 when not granted), and how long after the
    # statement was sent the ones not used at once may still be spent (a lease; 0 = use one now).
    count: int = 0
    lease_seconds: float = 0.0


async def take_token(
    conn: Conn, *, reserve: float, daily_share: float, max_tokens: int = 1, max_lease_seconds: float = 0.0
) -> Token:
    """Take tokens from the shared bucket if at least `needed` are there (1, or more for a stream
    that must leave `reserve` of the bucket to transactional mail) and the day's sends stay below
    `daily_share` of Max24HourSend. One statement, row-locked, on the Postgres clock.

    issue 15, leases: up to `max_tokens` at once, as many as the bucket holds above `needed` - 1
    (so a broadcast lease still leaves the reserve), within the day's room and at most a lease's
    worth of refill. The lease is valid `lease_seconds` = min(`max_lease_seconds`,
    (MaxSendRate - capacity - rate) / (2 x rate)): sends of any one-second window then come from
    grants of a 1 + lease_seconds window, at most capacity + rate x (1 + lease_seconds), which is
    half-way between the bucket's bound and MaxSendRate (half the jitter room is kept)."""
    cur = await conn.execute(
        "WITH clock AS (SELECT clock_timestamp() AS t), "
        "g AS (SELECT s.rate, s.capacity, clock.t, "
        "  LEAST(s.capacity, s.tokens + s.rate * EXTRACT(EPOCH FROM (clock.t - s.stamp))::float8) AS avail, "
        "  GREATEST(1, LEAST(s.capacity, 1 + %(reserve)s * s.capacity)) AS need, "
        "  (s.max_24_hour_send >= 0 AND s.sent_last_24_hours + s.sent_since_refresh "
        "   >= s.max_24_hour_send * %(daily)s) AS exhausted, "
        "  CASE WHEN s.max_24_hour_send >= 0 "
        "   THEN s.max_24_hour_send * %(daily)s - s.sent_last_24_hours - s.sent_since_refresh "
        "   ELSE 'Infinity'::float8 END AS room, "
        "  GREATEST(0, LEAST(%(lease)s, (s.max_send_rate - s.capacity - s.rate) / (2 * s.rate))) AS lease "
        "  FROM send_governor s, clock WHERE s.id = 1 FOR UPDATE OF s), "
        "v AS (SELECT g.*, CASE WHEN NOT g.exhausted AND g.avail >= g.need "
        "  THEN GREATEST(1, LEAST(%(max)s, floor(g.avail - g.need) + 1, floor(g.room), floor(g.rate * g.lease)))::int "
        "  ELSE 0 END AS n FROM g) "
        "UPDATE send_governor s SET tokens = v.avail - v.n, stamp = v.t, "
        "  sent_since_refresh = s.sent_since_refresh + v.n "
        "FROM v WHERE s.id = 1 "
        "RETURNING v.n > 0 AS granted, v.n, v.exhausted, v.avail, v.need, v.rate, v.lease",
        {"reserve": reserve, "daily": daily_share, "max": max(1, max_tokens), "lease": max(0.0, max_lease_seconds)},
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError("send_governor")
    return Token(
        granted=bool(row["granted"]),
        daily_exhausted=bool(row["exhausted"]),
        available=float(row["avail"]),
        needed=float(row["need"]),
        rate=float(row["rate"]),
        count=int(row["n"]),
        lease_seconds=float(row["lease"]),
    )


async def refresh_quota(
    conn: Conn,
    *,
    max_send_rate: float,
    max_24_hour_send: float,
    sent_last_24_hours: float,
    rate: float,
    capacity: float,
) -> None:
    """SES's SendQuota as GetAccount just reported it; the day's count restarts from SES's."""
    await conn.execute(
        "UPDATE send_governor SET max_send_rate = %s, max_24_hour_send = %s, sent_last_24_hours = %s, "
        "sent_since_refresh = 0, refreshed_at = now(), rate = %s, capacity = %s, "
        "tokens = LEAST(tokens, %s) WHERE id = 1",
        (max_send_rate, max_24_hour_send, sent_last_24_hours, rate, capacity, capacity),
    )


@dataclass(frozen=True)
class Quota:
    max_send_rate: float
    max_24_hour_send: float
    sent_24h: float
    refreshed_at: datetime | None


async def quota(conn: Conn) -> Quota:
    cur = await conn.execute(
        "SELECT max_send_rate, max_24_hour_send, sent_last_24_hours + sent_since_refresh AS sent_24h, refreshed_at "
        "FROM send_governor WHERE id = 1"
    )
    row = await cur.fetchone()
    if row is None:
        raise LookupError("send_governor")
    return Quota(
        max_send_rate=float(row["max_send_rate"]),
        max_24_hour_send=float(row["max_24_hour_send"]),
        sent_24h=float(row["sent_24h"]),
        refreshed_at=row["refreshed_at"],
    )


async def defer(
    conn: Conn,
    email_id: str,
    *,
    attempt: int,
    queued_event: bytes | None,
    delay_seconds: float,
    stream: str | None = None,
) -> bool:
    """An attempt that never reached SES (the governor said wait: the daily quota is near, or no
    token came in time): sending → held, owned by the sender's queue, due after `delay_seconds`.
    Only if `attempt` is still the current one. `stream` as in `hold`."""
    cur = await conn.execute(
        "UPDATE deliveries SET state = 'held', queued_event = COALESCE(%s, queued_event), "
        "stream = COALESCE(%s, stream), "
        "next_attempt_at = now() + make_interval(secs => %s::float8), updated_at = now() "
        "WHERE email_id = %s AND state = 'sending' AND attempts = %s",
        (queued_event, stream, delay_seconds, email_id, attempt),
    )
    return cur.rowcount == 1
