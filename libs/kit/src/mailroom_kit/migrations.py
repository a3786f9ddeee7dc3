"""Forward-only plain-SQL migrations, one Postgres schema per service.

Files `NNNN_name.sql` from the kit (outbox, inbox) and then from the service are applied in
order, each in its own transaction, recorded in `<schema>.schema_migrations`. A session
advisory lock per schema makes concurrent starts (several replicas, a Helm hook Job) safe.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection, sql

KIT_MIGRATIONS = Path(__file__).parent / "migrations"


def _migration_files(dirs: list[Path]) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for d in dirs:
        origin = "kit" if d.resolve() == KIT_MIGRATIONS.resolve() else "svc"
        for f in sorted(d.glob("[0-9][0-9][0-9][0-9]_*.sql")):
            files.append((f"{origin}:{f.stem}", f))
    return files


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"mailroom.migrate.{schema}".encode()).digest()[:8], "big", signed=True)


async def migrate(url: str, schema: str, service_dir: Path) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    applied_now: list[str] = []
    ident = sql.Identifier(schema)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(schema),))
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.schema_migrations "
                    "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(ident)
            )
            cur = await conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(ident))
            done = {row[0] for row in await cur.fetchall()}
            for version, path in _migration_files([KIT_MIGRATIONS, service_dir]):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
                    await conn.execute(path.read_text())  # type: ignore[arg-type]
                    await conn.execute(
                        sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(ident),
                        (version,),
                    )
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(schema),))
    return applied_now


async def pending(conn: AsyncConnection[Any], schema: str, service_dir: Path) -> list[str]:
    """Versions not yet applied (empty list = up to date)."""
    ident = sql.Identifier(schema)
    try:
        cur = await conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(ident))
    except Exception:
        return ["<no schema_migrations>"]
    rows = await cur.fetchall()
    done = {r["version"] if isinstance(r, dict) else r[0] for r in rows}
    return [v for v, _ in _migration_files([KIT_MIGRATIONS, service_dir]) if v not in done]
