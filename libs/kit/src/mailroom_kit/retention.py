"""Retention: tables that grow with every email are purged of rows older than their setting.

A service lists its `Purge`s (what to delete and for how long to keep it) and runs
`retention_worker(purges, interval_seconds=…)` as one of its workers. Every interval each purge
deletes rows older than `now - keep_seconds` in batches of `batch` rows, one transaction per batch,
until a batch comes back short, so a large backlog (a first run, a lowered setting) never holds
locks or a transaction open for long. `keep_seconds = 0` keeps that table forever.

The delete itself is the service's (SQL lives in its repository): `delete(conn, cutoff, limit)`
removes at most `limit` rows older than `cutoff` and returns how many. Written with
`… WHERE ctid IN (SELECT ctid … LIMIT n FOR UPDATE SKIP LOCKED)` it lets any number of replicas
run the worker at once without waiting on each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from mailroom_kit.db import Conn, Pool
from mailroom_kit.logging import get_logger
from mailroom_kit.wake import sleep_until_stopped

if TYPE_CHECKING:
    from mailroom_kit.runtime import Runtime

log = get_logger(__name__)

PURGED = Counter("mailroom_retention_purged_total", "Rows deleted by the retention job", ["schema", "table"])

Delete = Callable[[Conn, datetime, int], Awaitable[int]]


@dataclass(frozen=True)
class Purge:
    table: str  # for logs and metrics
    keep_seconds: float  # 0: keep forever
    delete: Delete


async def purge_once(pool: Pool, purge: Purge, *, schema: str, batch: int, stop: asyncio.Event | None = None) -> int:
    """Delete every row of `purge` older than its retention, batch by batch; return how many."""
    if purge.keep_seconds <= 0:
        return 0
    cutoff = datetime.now(UTC) - timedelta(seconds=purge.keep_seconds)
    total = 0
    while stop is None or not stop.is_set():
        async with pool.connection() as conn, conn.transaction():
            deleted = await purge.delete(conn, cutoff, batch)
        total += deleted
        if deleted:
            PURGED.labels(schema=schema, table=purge.table).inc(deleted)
        if deleted < batch:
            break
    return total


def retention_worker(
    purges: Sequence[Purge], *, interval_seconds: float, batch: int = 1000
) -> Callable[[Runtime[Any]], Coroutine[Any, Any, None]]:
    """A worker (for `serve(workers=…)`) running every purge each `interval_seconds` until stopped;
    a failed run (Postgres away) is logged and tried again at the next interval."""

    async def worker(rt: Runtime[Any]) -> None:
        while not rt.stop.is_set():
            for purge in purges:
                try:
                    deleted = await purge_once(rt.pool, purge, schema=rt.schema, batch=batch, stop=rt.stop)
                except Exception as exc:
                    log.warning("retention.purge_failed", table=purge.table, error=repr(exc))
                    continue
                if deleted:
                    log.info("retention.purged", table=purge.table, rows=deleted)
            if await sleep_until_stopped(rt.stop, interval_seconds):
                return

    return worker
