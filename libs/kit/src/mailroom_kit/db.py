"""Postgres connection pool (psycopg 3) with the service's schema first on the search_path, and
typed rows: `struct_row(T)` is a psycopg row factory that builds a msgspec Struct per row, so
repositories hand services typed values instead of dicts.

Sessions run in UTC, so timestamps read back are UTC whatever the server's time zone is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import msgspec
from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import BaseRowFactory, DictRow, RowMaker, dict_row
from psycopg_pool import AsyncConnectionPool

Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]
T = TypeVar("T", bound=msgspec.Struct)


def _options(schema: str) -> str:
    return f"-c search_path={schema} -c TimeZone=UTC"


async def open_pool(url: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    kwargs: dict[str, Any] = {"row_factory": dict_row, "options": _options(schema)}
    pool: Pool = AsyncConnectionPool(url, min_size=min_size, max_size=max_size, kwargs=kwargs, open=False, name=schema)
    await pool.open(wait=True, timeout=30)
    return pool


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
