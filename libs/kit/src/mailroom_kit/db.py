"""Postgres connection pool (psycopg 3) with the service's schema first on the search_path."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

Conn = AsyncConnection[DictRow]
Pool = AsyncConnectionPool[Conn]


async def open_pool(url: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> Pool:
    kwargs: dict[str, Any] = {"row_factory": dict_row, "options": f"-c search_path={schema}"}
    pool: Pool = AsyncConnectionPool(url, min_size=min_size, max_size=max_size, kwargs=kwargs, open=False, name=schema)
    await pool.open(wait=True, timeout=30)
    return pool


async def connect(url: str, schema: str, *, autocommit: bool = False) -> Conn:
    conn: Conn = await AsyncConnection.connect(
        url, row_factory=dict_row, options=f"-c search_path={schema}", autocommit=autocommit
    )
    return conn
