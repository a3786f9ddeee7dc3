"""Transactional outbox and its relay.

`add(conn, event)` writes the event into the schema's outbox inside the caller's
transaction (no publish without commit) and NOTIFYs the relay, which wakes on commit.
The relay takes a window of rows with `FOR UPDATE SKIP LOCKED` (any number of replicas may
run), publishes all of them to JetStream with `Nats-Msg-Id = event_id` without waiting for
each ack (`publish_async`: the acks come back while later messages are still being written),
then awaits every ack and deletes, in one statement, exactly the rows JetStream acknowledged,
all in the transaction that holds the locks. A row whose publish failed or was not acked in
time stays and is published again by the next window; a crash after publish and before commit
republishes too. JetStream's duplicate window drops the copies, and consumers are idempotent
by event id beyond it. `run` waits through the kit's `PgWaker`, so a stop ends it at once.

Order: the publishes of a window are written to the one NATS connection in `id` order
(nats-py appends each PUB to its write buffer before returning) and JetStream stores a
connection's messages in the order it reads them, so without failures the stream holds
them in outbox order. A window with a failed publish may store later rows first and the
failed one on retry: ordering is best-effort, as consumers already assume (they run
messages concurrently and rank status so that late events never move it back).

Scheduled rows: `add(..., not_before=t)` writes to `outbox_scheduled` instead (kit migration 0002),
an event to publish no earlier than `t` (by the database's clock). The immediate window is exactly
what it always was (same statement, same cost); due scheduled rows are taken by a window of their
own (`relay_due_once`, the same `FOR UPDATE SKIP LOCKED`), which also says how long until the next
one is due. `run` takes that window when the last one said a row is due now, and otherwise at most
every `schedule_check_seconds` after a wake-up (a NOTIFY or the poll: every schedule change
NOTIFYs), between immediate windows too, so a busy outbox cannot starve it; and it sleeps no longer
than until the next due row. No timer in memory is the truth: each scheduled window recomputes it
from the table, and a restart simply finds the due rows. `on_scheduled_relayed` lets the owner
record, in the very transaction that deletes the published rows, that they were published, and
`prepare_scheduled` lets it look at the due rows first (same transaction, same locks) to change a
payload or withhold a row (deleted unpublished): what was true at `add` may not be at the due time. The
owner of a scheduled row cancels it (`cancel_scheduled`: DELETE) or moves it (`scheduled_payload`,
then `reschedule`: UPDATE + NOTIFY, so the relays recompute their wait) under that same row lock,
inside its own transaction: while a relay holds the row (publishing it) the owner waits and then
finds it gone, so a row is either published or canceled, never both. An owner that also locks rows
the hook writes must take the outbox row first, as the relay does.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

import msgspec
from mailroom_contracts import encode, subject_for
from mailroom_contracts.events import Event
from nats.js import JetStreamContext

from mailroom_kit import tracing
from mailroom_kit.db import Conn, Pool
from mailroom_kit.logging import get_logger
from mailroom_kit.metrics import OUTBOX_PUBLISHED
from mailroom_kit.wake import LINGER_SECONDS, STREAM_GAP_SECONDS, PgWaker, StreamLinger, sleep_until_stopped

log = get_logger(__name__)


def channel(schema: str) -> str:
    return f"mailroom_outbox_{schema}"


def rows_json(rows: Iterable[tuple[str, str, bytes]]) -> str:
    """(event id, subject, payload) rows as one JSON text for a statement that writes them to the
    outbox itself (`jsonb_to_recordset(...) AS (event_id text, subject text, payload text)`, payload
    base64: `decode(payload, 'base64')`). One text, not arrays: psycopg dumps a list element by
    element in Python."""
    return msgspec.json.encode([{"event_id": i, "subject": s, "payload": p} for i, s, p in rows]).decode()


async def add(conn: Conn, event: Event, *, schema: str, not_before: datetime | None = None) -> None:
    """Write `event` to the outbox and notify the relay on commit, in one round trip (an event
    already there is left alone: it was notified when it was written). With `not_before` the
    event waits in `outbox_scheduled` until then (the NOTIFY makes the relays recompute their wait)."""
    if not_before is not None:
        await conn.execute(
            "WITH added AS (INSERT INTO outbox_scheduled (event_id, subject, payload, not_before, trace_context) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING RETURNING 1) "
            "SELECT pg_notify(%s, '') FROM added",
            (event.event_id, subject_for(event), encode(event), not_before, tracing.context_text(), channel(schema)),
        )
        return
    await conn.execute(
        "WITH added AS (INSERT INTO outbox (event_id, subject, payload, trace_context) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING 1) SELECT pg_notify(%s, '') FROM added",
        (event.event_id, subject_for(event), encode(event), tracing.context_text(), channel(schema)),
    )


async def cancel_scheduled(conn: Conn, event_id: str) -> bytes | None:
    """Delete the scheduled row of `event_id` inside the caller's transaction and return its
    payload; None when there is none (never scheduled, already canceled, or already published).
    A relay publishing it holds its lock: this waits for that window's commit and then finds the
    row gone (None)."""
    cur = await conn.execute("DELETE FROM outbox_scheduled WHERE event_id = %s RETURNING payload", (event_id,))
    row = await cur.fetchone()
    return None if row is None else bytes(row["payload"] if isinstance(row, dict) else row[0])


async def scheduled_payload(conn: Conn, event_id: str) -> bytes | None:
    """The payload of the scheduled row of `event_id`, locked FOR UPDATE as the relay locks it,
    for an owner about to `reschedule` it with a changed payload (None: no such row)."""
    cur = await conn.execute("SELECT payload FROM outbox_scheduled WHERE event_id = %s FOR UPDATE", (event_id,))
    row = await cur.fetchone()
    return None if row is None else bytes(row["payload"] if isinstance(row, dict) else row[0])


async def reschedule(conn: Conn, event: Event, *, schema: str, not_before: datetime) -> bool:
    """Move the scheduled row of `event.event_id` to `not_before`, replacing its payload with
    `event` (same id), and notify the relays on commit; False (nothing changed) when there is no
    such row (see `cancel_scheduled`: the same row lock decides)."""
    cur = await conn.execute(
        "WITH moved AS (UPDATE outbox_scheduled SET not_before = %s, payload = %s WHERE event_id = %s "
        "RETURNING 1) SELECT pg_notify(%s, '') AS notified FROM moved",
        (not_before, encode(event), event.event_id, channel(schema)),
    )
    return await cur.fetchone() is not None


_IMMEDIATE = (
    "SELECT id, event_id, subject, payload, trace_context FROM outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
)

# The relayed rows' ids as one array literal (`{1,2,3}`): psycopg dumps a Python list element by
# element (issue 15: 7 % of a relay window); the ids are integers from the SELECT, never input.
_DELETE_IMMEDIATE = "DELETE FROM outbox WHERE id = ANY(%s::bigint[])"
_DELETE_SCHEDULED = "DELETE FROM outbox_scheduled WHERE id = ANY(%s::bigint[])"


def _ids_literal(ids: Iterable[int]) -> str:
    return "{" + ",".join(str(int(i)) for i in ids) + "}"


# A scheduled window: the due rows (oldest time first; `statement_timestamp()` is stable, so the
# index on (not_before, id) bounds both scans), then one row saying how many seconds until the
# next row that is not due yet (NULL: none), by the database's clock.
_DUE = """
WITH due AS (
    SELECT id, event_id, subject, payload, trace_context FROM outbox_scheduled
    WHERE not_before <= statement_timestamp()
    ORDER BY not_before, id LIMIT %(n)s FOR UPDATE SKIP LOCKED
)
SELECT id, event_id, subject, payload, trace_context, NULL::float8 AS wait FROM due
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, extract(epoch FROM min(not_before) - statement_timestamp())::float8
FROM outbox_scheduled WHERE not_before > statement_timestamp()
"""


async def backlog(conn: Conn) -> tuple[int, float]:
    """(rows waiting to be relayed, age in seconds of the oldest; 0 when none), for the gauges."""
    cur = await conn.execute(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest FROM outbox"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["n"]), float(row["oldest"])


# nats-py lets 4,000 asynchronous publishes be pending per JetStream context; a window stays
# well below that, so `publish_async` never has to wait for a slot.
MAX_WINDOW = 1000


class RelayIncomplete(Exception):
    """Some publishes of a window were not acknowledged; their rows stay for the next window."""

    def __init__(self, *, relayed: int, failed: int, error: BaseException | None) -> None:
        super().__init__(f"{failed} of {relayed + failed} outbox rows not acknowledged: {error!r}")
        self.relayed = relayed
        self.failed = failed
        self.error = error


# Called in a scheduled window's transaction, after the DELETE of the acknowledged rows and before
# the commit, with their event ids: the owner records "published" atomically with it (the api
# moves those emails from `scheduled` to `queued`). If it raises, nothing of the window commits
# and the rows are published again (JetStream drops the copies).
OnScheduledRelayed = Callable[[Conn, list[str]], Awaitable[None]]
# Called with a window's due scheduled rows (dicts with id, event_id, subject, payload) under their
# row locks, in the relay's transaction, before anything is published: returns the rows to publish,
# possibly with another payload; a row it leaves out is deleted unpublished (the owner recorded why,
# in the same transaction). A changed payload is the owner's to store too: if the publish fails, the
# row is taken again as it is in the table.
PrepareScheduled = Callable[[Conn, list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]


class OutboxRelay:
    def __init__(
        self,
        pool: Pool,
        js: JetStreamContext,
        *,
        url: str,
        schema: str,
        batch_size: int = 256,
        idle_poll_seconds: float = 1.0,
        ack_timeout_seconds: float = 5.0,
        schedule_check_seconds: float = 0.25,
        on_scheduled_relayed: OnScheduledRelayed | None = None,
        prepare_scheduled: PrepareScheduled | None = None,
        linger_seconds: float = LINGER_SECONDS,
        stream_gap_seconds: float = STREAM_GAP_SECONDS,
    ) -> None:
        if not 1 <= batch_size <= MAX_WINDOW:
            raise ValueError(f"batch_size must be 1..{MAX_WINDOW}")
        self._pool = pool
        self._js = js
        self._url = url
        self._schema = schema
        self._batch = batch_size
        self._idle = idle_poll_seconds
        self._ack_timeout = ack_timeout_seconds
        self._schedule_check = schedule_check_seconds
        self._on_scheduled_relayed = on_scheduled_relayed
        self._prepare_scheduled = prepare_scheduled
        self._linger = linger_seconds
        self._stream_gap = stream_gap_seconds
        # The scheduled rows, as the last scheduled window saw them: the loop time the next one
        # is due (None: none), when that window ran, and whether a wake-up since asks for another.
        self._due_at: float | None = None
        self._checked_at = -float("inf")
        self._check_asked = True

    async def relay_once(self) -> int:
        """Publish one window of immediate rows and delete the rows JetStream acknowledged;
        return how many.

        Raises `RelayIncomplete` (after committing the deletes of the acknowledged rows) when
        any publish of the window failed, so that `run` backs off instead of spinning."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_IMMEDIATE, (self._batch,))
            rows = await cur.fetchall()
            if not rows:
                return 0
            acked, error = await self._publish_window(rows)
            if acked:
                await conn.execute(_DELETE_IMMEDIATE, (_ids_literal(row["id"] for row in acked),))
        return self._count(acked, rows, error)

    async def relay_due_once(self) -> int:
        """Publish one window of due scheduled rows, delete the acknowledged ones and learn when
        the next row is due; return how many were relayed (`RelayIncomplete` as `relay_once`)."""
        loop = asyncio.get_running_loop()
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_DUE, {"n": self._batch})
            result = await cur.fetchall()
            rows = [row for row in result if row["id"] is not None]
            [wait] = [row["wait"] for row in result if row["id"] is None]  # the aggregate's one row
            self._checked_at = loop.time()
            self._check_asked = False
            if not rows:  # wait for the next row's time
                self._due_at = None if wait is None else self._checked_at + wait
                return 0
            # Look again at once after this window: more may be due, or this one may fail (its
            # rows stay, due still).
            self._due_at = self._checked_at
            if self._prepare_scheduled is not None:
                kept = await self._prepare_scheduled(conn, rows)
                kept_ids = {row["id"] for row in kept}
                dropped = [row["id"] for row in rows if row["id"] not in kept_ids]
                if dropped:
                    await conn.execute(_DELETE_SCHEDULED, (_ids_literal(dropped),))
                rows = kept
                if not rows:
                    return 0
            acked, error = await self._publish_window(rows)
            if acked:
                await conn.execute(_DELETE_SCHEDULED, (_ids_literal(row["id"] for row in acked),))
                if self._on_scheduled_relayed is not None:
                    await self._on_scheduled_relayed(conn, [row["event_id"] for row in acked])
        return self._count(acked, rows, error)

    def _count(self, acked: list[dict[str, Any]], rows: list[dict[str, Any]], error: BaseException | None) -> int:
        for subject, count in Counter(row["subject"] for row in acked).items():
            OUTBOX_PUBLISHED.labels(schema=self._schema, subject=subject).inc(count)
        if len(acked) < len(rows):
            raise RelayIncomplete(relayed=len(acked), failed=len(rows) - len(acked), error=error)
        return len(acked)

    def _scheduled_window_due(self, now: float) -> bool:
        if self._due_at is not None and now >= self._due_at:
            return True
        return self._check_asked and now >= self._checked_at + self._schedule_check

    async def _relay_due_if_time(self) -> int:
        if not self._scheduled_window_due(asyncio.get_running_loop().time()):
            return 0
        return await self.relay_due_once()

    def _idle_wait(self) -> float:
        """How long to wait for a NOTIFY after an empty window: the poll interval, or less when
        a scheduled row falls due sooner, or a scheduled window was asked for but not yet taken."""
        now = asyncio.get_running_loop().time()
        wait = self._idle
        if self._due_at is not None:
            wait = min(wait, self._due_at - now)
        if self._check_asked:
            wait = min(wait, self._checked_at + self._schedule_check - now)
        return max(0.0, wait)

    async def _publish_window(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], BaseException | None]:
        """Publish every row, then await the acks: (the acknowledged rows, first error)."""
        error: BaseException | None = None
        pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        try:
            for row in rows:
                headers = {"Nats-Msg-Id": row["event_id"]}
                if row["trace_context"] is not None:  # the writer's span: the consumer's parent
                    headers.update(tracing.headers_of(row["trace_context"]))
                future = await self._js.publish_async(
                    row["subject"],
                    bytes(row["payload"]),
                    headers=headers,
                    # No stall timeout: with one nats-py wraps each call in a task and yields,
                    # writing one message per syscall; a window never fills the slots (MAX_WINDOW).
                    wait_stall=None,
                )
                pending.append((row, future))
        except Exception as exc:  # the connection is closed or its buffer full: the rest waits
            error = exc
        if pending:
            _, not_done = await asyncio.wait([f for _, f in pending], timeout=self._ack_timeout)
            for future in not_done:  # cancelling frees nats-py's slot for it; a late ack is dropped
                future.cancel()
        acked: list[dict[str, Any]] = []
        for row, future in pending:
            if future.cancelled():
                error = error or TimeoutError(f"no JetStream ack within {self._ack_timeout} s")
            elif (failure := future.exception()) is not None:
                error = error or failure
            else:
                acked.append(row)
        return acked, error

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set (returns at once); woken by NOTIFY, polling as a fallback,
        and at the moment the next scheduled row falls due."""
        async with PgWaker(self._url, channel(self._schema), stop=stop) as waker:
            linger = StreamLinger(self._linger, self._stream_gap)  # busy: a window that relayed rows
            while not stop.is_set():
                waker.clear()  # before looking: a commit during the batch wakes the next wait
                try:
                    while True:
                        relayed = await self.relay_once()
                        if relayed:  # new commits, maybe a schedule change among them
                            self._check_asked = True
                            linger.busy()
                        due = await self._relay_due_if_time()
                        # issue 15: a window that was not full took every row there was to take;
                        # a row committed since has its NOTIFY set the waker (cleared before the
                        # window), so the wait below returns at once: no empty window (BEGIN,
                        # SELECT, COMMIT) after each one under a steady stream of accepts.
                        if relayed < self._batch and not due:
                            break
                        if stop.is_set():
                            return
                except Exception as exc:  # NATS or Postgres down: keep rows, retry shortly
                    log.warning("outbox.relay_failed", schema=self._schema, error=repr(exc))
                    await sleep_until_stopped(stop, 1.0)
                    continue
                if await waker.wait(self._idle_wait()) and await linger.pause(stop):
                    return
                # Any wake-up (a NOTIFY: every schedule change sends one; the poll; a due time)
                # asks for a scheduled window, taken at most every `schedule_check_seconds`.
                self._check_asked = True
