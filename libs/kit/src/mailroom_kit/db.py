"""Postgres connection pool (psycopg 3) with the service's schema first on the search_path, and
typed rows: `struct_row(T)` is a psycopg row factory that builds a msgspec Struct per row, so
repositories hand services typed values instead of dicts.

Sessions run in UTC, so timestamps read back are UTC whatever the server's time zone is.

Faults are answered fast: waiting for a connection is bounded (`timeout`, default
`DEFAULT_POOL_TIMEOUT_SECONDS`, the shared `MAILROOM_DB_POOL_TIMEOUT_SECONDS`), an idle connection the
server has closed (restart, failover) is replaced on checkout instead of failing the request, and a
connection lost in an outage is retried only briefly in the background, after which the pool grows
again on demand, so the first request after recovery connects at once."""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import BaseRowFactory, DictRow, RowMaker, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]
T = TypeVar("T", bound=msgspec.Struct)


def _options(schema: str) -> str:
    return f"-c search_path={schema} -c TimeZone=UTC"


# The shared setting's default (settings.BaseSettings.db_pool_timeout_seconds); a test keeps them equal.
DEFAULT_POOL_TIMEOUT_SECONDS = 1.0
# libpq's own default is to wait for ever; a blackholed server would hold the pool's workers.
CONNECT_TIMEOUT_SECONDS = 5
# Waiting for the pool to fill at start-up tolerates a Postgres that is still starting.
OPEN_TIMEOUT_SECONDS = 30.0


async def open_pool(
    url: str, schema: str, *, min_size: int = 1, max_size: int = 10, timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS
) -> Pool:
    """A pool whose `connection()` waits at most `timeout` seconds (then `PoolTimeout`, an outage to
    answer, not a hang)."""
    kwargs: dict[str, Any] = {
        "row_factory": dict_row,
        "options": _options(schema),
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }
    pool: Pool = _Pool(
        url, min_size=min_size, max_size=max_size, kwargs=kwargs, open=False, name=schema, timeout=timeout
    )
    await pool.open(wait=True, timeout=OPEN_TIMEOUT_SECONDS)
    # After start-up, a lost connection is re-tried in the background for half a wait, not psycopg's
    # 5 minutes: its backoff doubles while the server is down, so after a long outage the next try
    # could be far away and requests would keep timing out with the server back. Once the retry gives
    # up, the next request that has to wait starts a new attempt at once.
    pool.reconnect_timeout = timeout / 2
    return pool


class _Pool(AsyncConnectionPool[Conn]):
    """Checks on checkout, cheaply, that the server has not closed an idle connection."""

    _sweep: asyncio.Task[None] | None = None

    async def getconn(self, timeout: float | None = None) -> Conn:
        wait = total = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            conn = await super().getconn(wait)
            if not await _closed_by_server(conn):
                return conn
            # Returned broken, it is discarded and replaced in the background; the others idle
            # in the pool were most likely closed by the same restart, so check them all now
            # rather than meeting them one by one.
            await self.putconn(conn)
            if self._sweep is None or self._sweep.done():
                self._sweep = asyncio.create_task(self.check(), name=f"pool-check-{self.name}")
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise PoolTimeout(f"couldn't get a connection after {total:.2f} sec")


async def _closed_by_server(conn: Conn) -> bool:
    """True if the server closed this idle connection. Costs a poll(2) of the socket; only when the
    server has sent something (a shutdown's FATAL, EOF, or a harmless notice) a round trip decides."""
    if conn.closed:
        return True
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        await AsyncConnectionPool.check_connection(conn)
    except psycopg.Error:
        return True
    return False


async def connect(url: str, schema: str, *, autocommit: bool = False) -> Conn:
    conn: Conn = await AsyncConnection.connect(
        url, row_factory=dict_row, options=_options(schema), autocommit=autocommit
    )
    return conn


def struct_row(cls: type[T]) -> BaseRowFactory[T]:
    """Row factory: each row becomes a `cls` (columns matched to fields by name; JSON columns and
    nested Structs are converted by msgspec)."""

    def factory(cursor: Any) -> RowMaker[T]:
        names = [c.name for c in cursor.description or ()]

        def make(values: Sequence[Any]) -> T:
            return msgspec.convert(dict(zip(names, values, strict=True)), cls)

        return make

    return factory


def columns(cls: type[msgspec.Struct], prefix: str = "") -> str:
    """The column list of a row Struct (`id, name, …`), optionally qualified (`t.id, t.name, …`)."""
    return ", ".join(f"{prefix}{name}" for name in cls.__struct_fields__)


async def fetch_one(conn: Conn, cls: type[T], query: Any, params: Any = None) -> T | None:
    cur: AsyncCursor[T] = conn.cursor(row_factory=struct_row(cls))
    async with cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def fetch_all(conn: Conn, cls: type[T], query: Any, params: Any = None) -> list[T]:
    cur: AsyncCursor[T] = conn.cursor(row_factory=struct_row(cls))
    async with cur:
        await cur.execute(query, params)
        return await cur.fetchall()


@contextlib.asynccontextmanager
async def single_statement(conn: Conn) -> AsyncIterator[None]:
    """For a unit of work that is one statement: autocommit, so the statement is its own
    transaction, without the BEGIN and COMMIT round trips. The connection goes back to the pool
    in its usual (transactional) mode."""
    await conn.set_autocommit(True)
    try:
        yield
    finally:
        if not conn.broken and not conn.closed:  # a broken connection is discarded by the pool
            await conn.set_autocommit(False)
