"""`Stack._migrate_all`: every service's migrations run at once, each reported on failure."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest
from cryptography.fernet import Fernet
from mailroom_devstack.infra import NatsServer, Postgres
from mailroom_devstack.stack import SERVICES, Ports, Stack


def _stack(tmp_path: Path, db_url: str) -> Stack:
    stack = Stack(
        base_dir=tmp_path, ports=Ports.free(), operator_token="op", webhooks_secret_key=Fernet.generate_key().decode()
    )
    stack.nats = NatsServer(tmp_path / "nats")  # only its URL goes into the environment; migrations need no NATS
    stack.db_url = db_url
    return stack


def test_every_schema_is_migrated_concurrently(tmp_path: Path, postgres: Postgres) -> None:
    name = f"mailroom_migrate_{secrets.token_hex(4)}"
    url = postgres.create_database(name)
    try:
        _stack(tmp_path, url)._migrate_all()
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'schema_migrations'"
            ).fetchall()
        assert sorted(r[0] for r in rows) == sorted(SERVICES)
    finally:
        postgres.drop_database(name)


def test_each_failing_service_is_named(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failed:
        _stack(tmp_path, "postgresql://nobody@127.0.0.1:1/none")._migrate_all()
    for service in SERVICES:
        assert f"migrations of {service} failed" in str(failed.value)


def test_the_connection_summary_names_who_holds_connections(postgres: Postgres) -> None:
    """A stack that cannot start says how many of max_connections are taken, and by which database."""
    name = f"mailroom_conns_{secrets.token_hex(4)}"
    url = postgres.create_database(name)
    try:
        with psycopg.connect(url), psycopg.connect(url):
            summary = postgres.connections()
        assert "of max_connections" in summary and f"{name} 2" in summary, summary
    finally:
        postgres.drop_database(name)
    unreachable = Postgres(Path("/nonexistent"), url="postgresql://nobody@127.0.0.1:1/none").start()
    assert unreachable.connections().startswith("Postgres connections: not readable")
