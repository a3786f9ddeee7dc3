"""The cost of the webhooks dispatcher's claim (`repository.claim_due_deliveries`) by the backlog of
one busy endpoint, against a real Postgres, with the statement it replaced (migration 0006) timed on
the same rows. Not part of `make test` or `make bench` (it needs no stack):

    uv run python bench/webhook_claim.py [--database-url URL] 1000 20000 100000 ...

Each size N fills a scratch database's webhooks `deliveries` with N due pending deliveries of one
endpoint (`wh_busy`, three events per email: order keys `msg_…`, so two of every three wait for an
earlier one), older than every other due row, plus `--quiet-endpoints` (5) quiet endpoints with 3 due
deliveries each (one without order key, two of one email: the second waits) and a disabled endpoint
with 10 due ones. Two
states of the busy endpoint: **saturated** (it holds its `PER_ENDPOINT_CONCURRENCY` 4 live leases, as
an endpoint that hangs does) and **open** (no lease). Each claim (batch 64, the dispatcher's default
`CONCURRENCY`, 4 per endpoint) runs in a transaction that is rolled back, so every one sees the same
rows; ten are timed after one that warms the caches (median and worst of the round trip), then one
EXPLAIN ANALYZE gives the time in Postgres and the rows of `deliveries` read. The old statement runs on
migrations 0001-0005, then 0006 is applied and the new one runs on the same rows. The claimed rows are
printed too: with 5 quiet endpoints both claim their 10 claimable deliveries when the busy endpoint is
saturated; when it is open, the old one took only its 4 (its scan window held nothing else). The
scratch database (`mailroom_bench_webhook_claim`) is dropped and made again."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from mailroom_kit.db import Conn, open_pool
from mailroom_kit.migrations import migrate
from mailroom_webhooks import repository
from mailroom_webhooks.app import MIGRATIONS, SCHEMA

SCRATCH = "mailroom_bench_webhook_claim"
BATCH, PER_ENDPOINT, LEASE = 64, 4, 45.0
OLD_UNTIL = "0006"  # the old statement is timed on the migrations before this one

# The claim before migration 0006 (`2aca2f2`), word for word: one scan of every due row in
# next_attempt_at order (`deliveries_due`, which 0006 drops), so it is timed on the indexes it was
# written for, migrations 0001-0005, before 0006 is applied to the same database.
OLD_CLAIM = """
    WITH clock AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now), busy AS (
        SELECT endpoint_id, count(*) AS n FROM deliveries
        WHERE status = 'in_flight' AND lease_expires_at > (SELECT now FROM clock)
        GROUP BY endpoint_id
    ), candidates AS (
        SELECT d.id, d.endpoint_id, d.next_attempt_at, d.manual_retry FROM deliveries d
        JOIN endpoints e ON e.id = d.endpoint_id AND e.enabled AND e.deleted_at IS NULL
        WHERE ((d.status = 'pending' AND d.next_attempt_at <= (SELECT now FROM clock))
               OR (d.status = 'in_flight' AND d.lease_expires_at <= (SELECT now FROM clock)))
          AND d.endpoint_id NOT IN (SELECT endpoint_id FROM busy WHERE n >= %(per_endpoint)s)
          AND (d.order_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM deliveries p
              WHERE p.endpoint_id = d.endpoint_id AND p.order_key = d.order_key AND p.seq < d.seq
                AND p.status IN ('pending', 'in_flight')))
        ORDER BY d.next_attempt_at
        LIMIT %(scan)s
        FOR UPDATE OF d SKIP LOCKED
    ), ranked AS (
        SELECT c.id, c.next_attempt_at, c.manual_retry,
               row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at, c.id)
               + coalesce(b.n, 0) AS slot
        FROM candidates c LEFT JOIN busy b USING (endpoint_id)
    ), chosen AS (
        SELECT id, manual_retry FROM ranked WHERE slot <= %(per_endpoint)s
        ORDER BY next_attempt_at, id LIMIT %(limit)s
    )
    UPDATE deliveries d
       SET status = 'in_flight', attempts = d.attempts + 1, manual_retry = false,
           lease_expires_at = (SELECT now FROM clock) + make_interval(secs => %(lease)s), updated_at = now()
      FROM chosen, endpoints e
     WHERE d.id = chosen.id AND e.id = d.endpoint_id
    RETURNING d.id, d.endpoint_id, d.tenant_id, d.event_id, d.event_type, d.payload, d.attempts, d.trace_context,
              chosen.manual_retry AS manual, e.url, e.secret_encrypted, e.format,
              CASE WHEN e.previous_secret_expires_at > (SELECT now FROM clock) THEN e.previous_secret_encrypted END
                  AS previous_secret_encrypted
"""


async def old_claim(conn: Conn) -> list[dict[str, Any]]:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (repository._CLAIM_LOCK,))
    text, params = STATEMENTS["old"]
    cur = await conn.execute(text, params)
    return await cur.fetchall()


async def new_claim(conn: Conn) -> list[dict[str, Any]]:
    return await repository.claim_due_deliveries(conn, limit=BATCH, per_endpoint=PER_ENDPOINT, lease_seconds=LEASE)


STATEMENTS = {
    "old": (
        OLD_CLAIM,
        {"now": None, "per_endpoint": PER_ENDPOINT, "scan": max(BATCH * 4, 100), "limit": BATCH, "lease": LEASE},
    ),
    "new": (
        repository.CLAIM_DUE_SQL,
        repository.claim_params(now=None, limit=BATCH, per_endpoint=PER_ENDPOINT, lease_seconds=LEASE),
    ),
}


def rows_read(node: dict[str, Any]) -> int:
    """Rows the plan's scans of `deliveries` returned or filtered out, over all their loops."""
    n = 0
    if node.get("Relation Name") == "deliveries" and "Scan" in node["Node Type"]:
        kept = node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)
        n += round(kept * node.get("Actual Loops", 1)) + node.get("Rows Removed by Index Recheck", 0)
    return n + sum(rows_read(child) for child in node.get("Plans", []))


async def explained(pool: Any, label: str) -> tuple[float, float, int]:
    """One EXPLAIN ANALYZE of the statement (rolled back): its planning and execution time (ms) in
    Postgres and the rows of `deliveries` it read."""
    text, params = STATEMENTS[label]
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + text, params)
        row = await cur.fetchone()
    plan = next(iter(row.values()))[0]
    return float(plan["Planning Time"]), float(plan["Execution Time"]), rows_read(plan["Plan"])


async def fill(conn: Conn, backlog: int, quiet: int) -> None:
    await conn.execute("TRUNCATE delivery_attempts, endpoint_notices, deliveries, endpoints")
    ids = ["wh_busy", "wh_off", *(f"wh_quiet{i}" for i in range(quiet))]
    for endpoint_id in ids:
        await conn.execute(
            "INSERT INTO endpoints (id, tenant_id, url, events, secret_encrypted, enabled) "
            "VALUES (%s, 'ten_bench', 'https://hooks.example.org/x', '{*}', 'enc', %s)",
            (endpoint_id, endpoint_id != "wh_off"),
        )
    # The busy endpoint's backlog, due an hour ago on, in seq order; three events per email.
    await conn.execute(
        "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload, next_attempt_at, "
        "order_key) SELECT 'whd_busy' || g, 'wh_busy', 'ten_bench', 'evt_' || g, 'email.sent', '\\x7b7d'::bytea, "
        "now() - interval '1 hour' + g * interval '1 microsecond', 'msg_' || (g / 3) "
        "FROM generate_series(1, %s) g ORDER BY g",
        (backlog,),
    )
    # Quiet endpoints: a keyless delivery and two of one email each, due a minute ago; the disabled
    # endpoint's are never claimed.
    for endpoint_id, n in [*((f"wh_quiet{i}", 3) for i in range(quiet)), ("wh_off", 10)]:
        await conn.execute(
            "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload, next_attempt_at, "
            "order_key) SELECT 'whd_' || %(e)s || '_' || g, %(e)s, 'ten_bench', 'evt_' || g, 'email.sent', "
            "'\\x7b7d'::bytea, now() - interval '1 minute' + g * interval '1 ms', "
            "CASE WHEN g = 1 THEN NULL ELSE 'msg_q_' || %(e)s END FROM generate_series(1, %(n)s) g ORDER BY g",
            {"e": endpoint_id, "n": n},
        )
    # Statistics as autovacuum would have them; no VACUUM (a live table's rows are seldom all-visible).
    await conn.execute("ANALYZE deliveries")
    await conn.execute("ANALYZE endpoints")


async def saturate(conn: Conn, on: bool) -> None:
    """The busy endpoint's 4 oldest deliveries in flight with a live lease (on) or back to pending."""
    if on:
        await conn.execute(
            "UPDATE deliveries SET status = 'in_flight', attempts = 1, lease_expires_at = now() + interval '1 hour' "
            "WHERE id IN (SELECT id FROM deliveries WHERE endpoint_id = 'wh_busy' ORDER BY next_attempt_at LIMIT %s)",
            (PER_ENDPOINT,),
        )
    else:
        await conn.execute(
            "UPDATE deliveries SET status = 'pending', attempts = 0, lease_expires_at = NULL "
            "WHERE endpoint_id = 'wh_busy' AND status = 'in_flight'"
        )


async def timed(pool: Any, claim: Any, claims: int) -> tuple[list[float], list[dict[str, Any]]]:
    took, got = [], []
    for _ in range(claims + 1):  # the first one warms the caches: not counted
        async with pool.connection() as conn:
            started = time.perf_counter()
            async with conn.transaction(force_rollback=True):
                got = await claim(conn)
            took.append((time.perf_counter() - started) * 1000)
    return took[1:], got


def summary(rows: list[dict[str, Any]]) -> str:
    busy = sum(1 for r in rows if r["endpoint_id"] == "wh_busy")
    return f"{len(rows)} claimed ({busy} busy)"


async def measure(server_url: str, sizes: list[int], which: list[str], quiet: int, claims: int = 10) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        admin.execute(f"CREATE DATABASE {SCRATCH}")
    url = psycopg.conninfo.make_conninfo(server_url, dbname=SCRATCH)
    statements = {"old": old_claim, "new": new_claim}
    results: dict[tuple[int, str, str], tuple[float, float, float, float, int, str]] = {}
    try:
        # The old statement on the indexes it was written for (migrations 0001-0005), then the new
        # one after 0006: the same rows, filled again for each.
        for label in which:
            if label == "old":
                with tempfile.TemporaryDirectory(prefix="wh-migrations-") as before:
                    for f in sorted(MIGRATIONS.glob("*.sql")):
                        if f.name < OLD_UNTIL:
                            shutil.copy(f, Path(before) / f.name)
                    await migrate(url, SCHEMA, Path(before))
            else:
                await migrate(url, SCHEMA, MIGRATIONS)
            pool = await open_pool(url, SCHEMA, min_size=1, max_size=2)
            try:
                for backlog in sizes:
                    async with pool.connection() as conn, conn.transaction():
                        await fill(conn, backlog, quiet)
                    for state in ("saturated", "open"):
                        async with pool.connection() as conn, conn.transaction():
                            await saturate(conn, state == "saturated")
                        took, got = await timed(pool, statements[label], claims)
                        planned, executed, read = await explained(pool, label)
                        median = statistics.median(took)
                        results[(backlog, state, label)] = (median, max(took), planned, executed, read, summary(got))
                        print(
                            f"{label} {backlog:>7} due at wh_busy, {state:>9}: claim of {BATCH} median "
                            f"{median:7.2f} ms, worst {max(took):7.2f} ms; planned in {planned:5.2f} ms, "
                            f"executed in {executed:7.2f} ms, {read} rows read; {summary(got)}",
                            flush=True,
                        )
            finally:
                await pool.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
    head = " | ".join(f"{w}: median / worst, planned, executed, rows read, claimed" for w in which)
    print(f"\n| due at one endpoint | busy endpoint | {head} |")
    print("|---|---|" + "---|" * len(which))
    for backlog in sizes:
        for state in ("saturated", "open"):
            cells = []
            for w in which:
                median, worst, planned, executed, read, claimed = results[(backlog, state, w)]
                cells.append(f"{median:.1f} / {worst:.1f} ms, {planned:.2f} ms, {executed:.2f} ms, {read:,}, {claimed}")
            print(f"| {backlog:,} | {state} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--only", choices=["old", "new"], help="time one statement only")
    parser.add_argument("--quiet-endpoints", type=int, default=5, help="endpoints with 3 due deliveries each")
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 20000, 100000])
    args = parser.parse_args()
    which = [args.only] if args.only else ["old", "new"]
    asyncio.run(measure(args.database_url, args.sizes, which, args.quiet_endpoints))


if __name__ == "__main__":
    main()
