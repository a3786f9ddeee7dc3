"""issue 23: the cost of the sender's fair claim (`repository.claim_queued`) by queue size and
tenant count, against a real Postgres. Not part of `make test` or `make bench` (it needs no stack):

    uv run python bench/fair_claim.py [--database-url URL] 20000:1 100000:1 100000:100 ...

Each `ROWS:TENANTS` fills a scratch database's sender `deliveries` with ROWS due queued emails spread
over TENANTS tenants (as the sender's queue holds them: `held`, `queued_event` set, due), then times
ten claims of 16 (the sender's batch at `MAILROOM_SENDER_CONCURRENCY` 16) and prints the median
and the worst. The scratch database (`mailroom_bench_fair_claim`) is dropped and made again."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import psycopg
from mailroom_kit.db import open_pool
from mailroom_kit.migrations import migrate
from mailroom_sender import repository
from mailroom_sender.app import MIGRATIONS
from mailroom_sender.service import SCHEMA

SCRATCH = "mailroom_bench_fair_claim"


async def measure(server_url: str, sizes: list[tuple[int, int]], claims: int = 10, batch: int = 16) -> None:
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        admin.execute(f"CREATE DATABASE {SCRATCH}")
    url = psycopg.conninfo.make_conninfo(server_url, dbname=SCRATCH)
    await migrate(url, SCHEMA, MIGRATIONS)
    pool = await open_pool(url, SCHEMA, min_size=1, max_size=2)
    try:
        for rows, tenants in sizes:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("TRUNCATE deliveries")
                await conn.execute(
                    "INSERT INTO deliveries (email_id, tenant_id, mode, recipients, state, attempts, queued_event, "
                    "next_attempt_at) SELECT 'msg_' || g, 'ten_' || (g %% %s), 'live', ARRAY['a@example.org'], "
                    "'held', 1, '\\x7b7d'::bytea, now() - interval '60 seconds' + g * interval '1 microsecond' "
                    "FROM generate_series(1, %s) g",
                    (tenants, rows),
                )
                # Statistics as autovacuum would have them; no VACUUM: a live queue's rows are
                # seldom all-visible, so the index-only scans still read the heap here, as there.
                await conn.execute("ANALYZE deliveries")
            took = []
            for _ in range(claims + 1):  # the first one warms the caches: not counted
                started = time.perf_counter()
                async with pool.connection() as conn, conn.transaction():
                    got = await repository.claim_queued(conn, limit=batch, lease_seconds=120)
                took.append((time.perf_counter() - started) * 1000)
                assert len(got) == batch, len(got)
            took = took[1:]
            print(
                f"{rows:>7} queued, {tenants:>5} tenants: claim of {batch} "
                f"median {statistics.median(took):6.1f} ms, worst {max(took):6.1f} ms"
            )
    finally:
        await pool.close()
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("sizes", nargs="*", default=["20000:1", "100000:1", "20000:100", "100000:100", "20000:1000"])
    args = parser.parse_args()
    sizes = [(int(rows), int(tenants)) for rows, tenants in (s.split(":") for s in args.sizes)]
    asyncio.run(measure(args.database_url, sizes))


if __name__ == "__main__":
    main()
